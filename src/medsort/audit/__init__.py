"""Audit stage: does the grouping follow the condition, or an attribute of the files?

After Data AUDIT (arXiv 2304.03218): every attribute found in the metadata (file format,
size, bit depth, sub-folder, DICOM tags, a user CSV) gets a *utility* (how much it goes with
the groups, or the labels) and a *detectability* (how much of it an image model reads
beyond them); high on both flags a likely shortcut. Hygiene checks find exact and near
duplicates, outliers and low-quality images. See ``docs/audit.md``.
"""

from medsort.audit.hygiene import keep_mask
from medsort.audit.run import AuditSettings, duplicate_keep_mask, load_audit, run_audit

__all__ = ["AuditSettings", "duplicate_keep_mask", "keep_mask", "load_audit", "run_audit"]
