"""The bundled demo: 160 real 28x28 images from two MedMNIST v2 sets (CC BY 4.0).

80 chest X-rays (PneumoniaMNIST: 40 normal, 40 pneumonia) and 80 breast ultrasound
images (BreastMNIST: 40 benign or normal, 40 malignant), under neutral file names.
``labels.csv`` holds the true labels, for ``medsort eval`` only. See ATTRIBUTION.md.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def demo_folder() -> Path:
    """The folder of demo images."""
    return HERE / "images"


def demo_labels() -> Path:
    """``path,label`` for the demo images (evaluation only)."""
    return HERE / "labels.csv"
