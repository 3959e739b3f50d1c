"""medsort: sort medical images into groups by modality and condition, without labels."""

__version__ = "0.1.0"
