"""Read stage: find files, choose a reader by file type, return display-ready images."""

from medsort.io.image import MedImage
from medsort.io.readers import (
    ReadError,
    ReadOptions,
    find_reader,
    iter_images,
    read_file,
    register_optional_readers,
    register_reader,
)
from medsort.io.scan import scan_folder

# The built-in readers whose libraries may be missing: imported on first use, each
# registers itself (a new format: one module here and one line below).
register_optional_readers("medsort.io.dicom", "medsort.io.nifti", "medsort.io.slide")

__all__ = [
    "MedImage",
    "ReadError",
    "ReadOptions",
    "find_reader",
    "iter_images",
    "read_file",
    "register_reader",
    "scan_folder",
]
