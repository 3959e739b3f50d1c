"""Read stage: find files, choose a reader by file type, return display-ready images."""

from medsort.io.image import MedImage
from medsort.io.readers import (
    ReadError,
    ReadOptions,
    find_reader,
    iter_images,
    read_file,
    register_reader,
)
from medsort.io.scan import scan_folder

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
