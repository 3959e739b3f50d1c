"""``AuditSettings``: the audit's thresholds, and which attribute sources mean what."""

from __future__ import annotations

from dataclasses import dataclass

TECHNICAL_SOURCES = ("file", "path", "dicom")
"""Attribute sources that describe how a file was made, not what it shows."""
CONTENT_DEPENDENT = ("file_size",)
"""Attributes that follow the image content itself (JPEG/PNG size grows with detail), so
their association with groups is expected: reported as notes, never as warnings."""


@dataclass
class AuditSettings:
    """Thresholds of the audit (the defaults are documented in ``docs/audit.md``).

    Attributes
    ----------
    alpha : float
        False discovery rate (Benjamini–Hochberg over every test of the audit).
    min_utility : float
        Smallest chance-adjusted normalised MI with the groups or labels worth reporting.
    min_detectability : float
        Smallest chance-adjusted share of ``H(A | T)`` the image model must recover.
    determined : float
        ``H(A | T) / H(A)`` below which ``A`` is (almost) a function of ``T``, so that
        "beyond T" cannot be measured; the attribute is then perfectly confounded.
    n_permutations : int
        Permutations per test.
    near_z, outlier_z : float
        Robust z-score cuts for near duplicates and outliers.
    pixel_floor : float
        Lowest content correlation the calibrated near-duplicate cut may take.
    hash_bits : int
        Largest perceptual-hash distance (of 64 bits) that counts as a copy.
    min_signals : int
        Signals (embedding, content correlation, perceptual hash) that must agree before
        a pair is called a near duplicate.
    n_neighbours : int
        Neighbours searched per image.
    quality : bool
        Use pixel statistics (quality flags, duplicate signals): those the read pass
        recorded (``signatures.npz``), or a re-read of each file for folders sorted before
        they were recorded (which also measures their appearance attributes).
    strong_utility : float
        Utility above which an appearance attribute alone nearly separates the groups (or
        the classes): a warning even without labels to compare with. Below it, an
        appearance difference is a note (it may be how the condition looks).
    stability_runs : int
        Subsampled reruns of the grouping for the stability score (0 = none).
    random_state : int
        Seed of permutations, PCA and cross-validation folds.
    """

    alpha: float = 0.05
    min_utility: float = 0.1
    min_detectability: float = 0.05
    determined: float = 0.1
    n_permutations: int = 200
    near_z: float = 4.0
    pixel_floor: float = 0.8
    hash_bits: int = 10
    min_signals: int = 2
    outlier_z: float = 3.5
    n_neighbours: int = 10
    quality: bool = True
    strong_utility: float = 0.6
    stability_runs: int = 5
    random_state: int = 0
