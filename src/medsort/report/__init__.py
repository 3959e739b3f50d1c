"""Report/export stage: CSV tables, the HTML report and group folders."""

from medsort.report.export import export_groups
from medsort.report.html import register_section, write_report

__all__ = ["export_groups", "register_section", "write_report"]
