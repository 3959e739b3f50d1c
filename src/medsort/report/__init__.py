"""Report/export stage: the HTML report, group folders, and the whole output folder."""

from medsort.report.export import export_groups
from medsort.report.folder import save_folder
from medsort.report.html import register_section, write_report

__all__ = ["export_groups", "register_section", "save_folder", "write_report"]
