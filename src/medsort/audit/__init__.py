"""Audit stage: does the grouping follow the condition, or an attribute of the files?

After Data AUDIT (arXiv 2304.03218): every attribute found in the metadata (file format,
size, bit depth, sub-folder, DICOM tags, a user CSV) gets a *utility* (how much it goes with
the groups, or the labels) and a *detectability* (how much of it an image model reads
beyond them); high on both flags a likely shortcut. Hygiene checks find exact and near
duplicates, outliers and low-quality images. See ``docs/audit.md``.
"""

from __future__ import annotations

from medsort.lazy import lazy_exports

_EXPORTS = {
    "keep_mask": "medsort.embed.cache",
    "AuditSettings": "medsort.audit.settings",
    "duplicate_keep_mask": "medsort.audit.run",
    "AuditResult": "medsort.audit.records",
    "Finding": "medsort.audit.records",
    "audit_folder": "medsort.audit.run",
    "load_audit": "medsort.audit.store",
    "run_audit": "medsort.audit.run",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
