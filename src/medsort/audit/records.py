"""Typed records the audit passes between its parts, and the layout of ``audit.json``.

:class:`Finding` is one flagged item in plain language; :class:`GroupingVerdict` says
whether the grouping as a whole follows appearance; :class:`AuditResult` is everything
one audit found. ``to_dict`` of each gives exactly the JSON that ``audit.json`` has
always held (version 2), so readers of the file see no change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

AUDIT_VERSION = 2


@dataclass
class Finding:
    """One thing the audit flags, with the message a person reads.

    Attributes
    ----------
    level : str
        ``"warning"`` or ``"note"``.
    kind : str
        ``"attribute"``, ``"verdict"``, ``"stability"``, ``"group_count"`` or a hygiene check
        (``"exact_duplicates"``, ``"near_duplicates"``, ``"outliers"``, ``"quality"``,
        ``"label_conflicts"``).
    message : str
        Plain words first, the scores in brackets.
    attribute, source, target, verdict : str, optional
        For attribute and verdict findings: which attribute (``None`` when several are
        merged, see ``attributes``), its source, ``"groups"`` or ``"label"``, and the verdict.
    utility, detectability : float, optional
        The scores behind an attribute finding.
    attributes : list of str, optional
        The attributes merged into one finding.
    """

    level: str
    kind: str
    message: str
    attribute: str | None = None
    source: str | None = None
    target: str | None = None
    verdict: str | None = None
    utility: float | None = None
    detectability: float | None = None
    attributes: list[str] | None = None

    @property
    def about_attribute(self) -> bool:
        """Whether the finding is about attributes (it then carries their fields)."""
        return self.kind in ("attribute", "verdict")

    def to_dict(self) -> dict[str, Any]:
        if not self.about_attribute:
            return {"level": self.level, "kind": self.kind, "message": self.message}
        out: dict[str, Any] = {"level": self.level, "kind": self.kind}
        out["attribute"] = self.attribute
        if self.attributes is not None:
            out["attributes"] = list(self.attributes)
        out.update(
            source=self.source,
            target=self.target,
            verdict=self.verdict,
            utility=self.utility,
            detectability=self.detectability,
            message=self.message,
        )
        return out


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Warnings first, then by utility (highest first); stable otherwise."""
    return sorted(findings, key=lambda f: (f.level != "warning", -(f.utility or 0)))


@dataclass
class GroupingVerdict:
    """Whether the grouping is explained by appearance better than by anything else.

    Attributes
    ----------
    verdict : str
        ``"appearance"`` or ``"ok"``.
    attribute : str, optional
        The appearance attribute the groups follow above all.
    utility : float, optional
        Its utility for the groups.
    label_utility : float, optional
        Utility of the true labels for the groups (given labels).
    """

    verdict: str = "ok"
    attribute: str | None = None
    utility: float | None = None
    label_utility: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "attribute": self.attribute,
            "utility": self.utility,
            "label_utility": self.label_utility,
        }


@dataclass
class AuditResult:
    """Everything one audit found; :meth:`to_dict` is the content of ``audit.json``.

    ``attributes`` (per-attribute scores), ``stability`` and ``hygiene`` keep the nested
    JSON layout documented in ``docs/audit.md``; ``tables`` are the hygiene CSVs by file
    name (not part of ``audit.json``).
    """

    n_items: int
    targets: list[str]
    settings: dict[str, Any]
    metadata_csv: str | None
    truth_csv: str | None
    findings: list[Finding]
    attributes: list[dict[str, Any]]
    ignored: list[dict[str, str]]
    group_explanations: dict[str, Any]
    group_explanation_details: dict[str, Any]
    grouping_verdict: GroupingVerdict
    stability: dict[str, Any]
    hygiene: dict[str, Any]
    timings_s: dict[str, float]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": AUDIT_VERSION,
            "n_items": self.n_items,
            "targets": self.targets,
            "settings": self.settings,
            "metadata_csv": self.metadata_csv,
            "truth_csv": self.truth_csv,
            "findings": [finding.to_dict() for finding in self.findings],
            "attributes": self.attributes,
            "ignored": self.ignored,
            "group_explanations": self.group_explanations,
            "group_explanation_details": self.group_explanation_details,
            "grouping_verdict": self.grouping_verdict.to_dict(),
            "stability": self.stability,
            "hygiene": self.hygiene,
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
        }
