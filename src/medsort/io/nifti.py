"""NIfTI and other nibabel volumes as upright 2D slices.

Each volume is turned to the closest canonical (RAS+) orientation from its affine, then
shown the way a DICOM viewer shows it: anterior (axial) or superior (coronal,
sagittal) at the top and the patient's right on the viewer's left. One intensity
mapping is used for the whole volume: the user's window (CT in Hounsfield units) or
robust percentiles of all finite voxels. 4D files use their first volume.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medsort.io import intensity
from medsort.io.admission import DEFAULT_BUDGET, Budget, check_array
from medsort.io.errors import error_text
from medsort.io.image import MedImage
from medsort.io.readers import ReadError, ReadOptions, register_reader
from medsort.lazy import lazy_module

nib = lazy_module("nibabel")  # imported with the first NIfTI file

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mgh", ".mgz", ".hdr")
MIN_SLICE_SIDE = 4
"""Slices thinner than this (e.g. sagittal cuts of a single-slice file) are left out."""
PERCENTILE_SAMPLE = 2_000_000
"""Voxels sampled to choose the display range of large volumes."""


class VolumeReader:
    """3D/4D volumes readable by nibabel; items per ``ReadOptions.volume``."""

    name = "nifti"

    def can_read(self, path: Path, head: bytes) -> bool:
        """By extension, or an uncompressed NIfTI-1/2 magic for files without one."""
        name = path.name.lower()
        return name.endswith(VOLUME_SUFFIXES) or _nifti_magic(head)

    def read(self, path: Path, options: ReadOptions) -> Iterator[MedImage]:
        volume, zooms, meta = load_volume(path, options.budget)
        to_display = display_mapper(volume, options.window)
        for item, plane, aspect in volume_items(volume, zooms, options.volume):
            pixels = _resize_for_aspect(to_display(plane), aspect)
            shape = {"width": int(pixels.shape[1]), "height": int(pixels.shape[0])}
            yield MedImage(pixels=pixels, path=path, item=item, meta={**meta, **shape})


def _nifti_magic(head: bytes) -> bool:
    return (len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00")) or (
        len(head) >= 8 and head[4:8] == b"n+2\x00"
    )


def load_volume(
    path: Path, budget: Budget = DEFAULT_BUDGET
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The first 3D volume in RAS+ orientation, its voxel sizes and non-identifying meta.

    The header's declared size is checked against ``budget`` (and, for uncompressed
    files, against the file's length) before the data is read. Header free text
    (``descrip``, ``db_name``, ``intent_name``) is never copied.
    """
    try:
        image = _load(path)
    except Exception as error:
        raise ReadError(f"not a readable volume: {error_text(error)}") from None
    shape = image.shape
    if getattr(image, "affine", None) is None:
        raise ReadError(f"not an image volume ({type(image).__name__} has no affine)")
    if len(shape) < 2:
        raise ReadError(f"not an image volume (shape {shape})")
    check_declared_size(path, image, budget)
    try:
        data = _first_volume(image)
    except (OSError, EOFError, ValueError) as error:
        raise ReadError(f"truncated or corrupt volume data: {error_text(error)}") from None
    ornt = nib.orientations.io_orientation(image.affine)
    zooms_in = np.array(image.header.get_zooms()[:3] + (1.0,) * (3 - len(shape[:3])), float)
    data = nib.orientations.apply_orientation(data, ornt)
    zooms = np.empty(3)
    zooms[ornt[:, 0].astype(int)] = zooms_in
    meta = {
        "format": _format_name(image),
        "bit_depth": int(image.get_data_dtype().itemsize * 8),
        "volume_shape": "x".join(str(n) for n in shape),
        "voxel_size": "x".join(f"{z:.4g}" for z in zooms),
    }
    return data, zooms, meta


def _load(path: Path) -> Any:
    """``nib.load``, or a NIfTI single file found by its magic despite a missing extension."""
    if path.name.lower().endswith(VOLUME_SUFFIXES):
        return nib.load(str(path))
    with open(path, "rb") as handle:
        head = handle.read(348)
    kind = nib.Nifti2Image if head[4:8] == b"n+2\x00" else nib.Nifti1Image
    holder = nib.fileholders.FileHolder(filename=str(path))
    return kind.from_file_map({"header": holder, "image": holder})


def check_declared_size(path: Path, image: Any, budget: Budget) -> None:
    """Refuse a first volume over budget (as float32), or data the file cannot hold."""
    first = tuple(image.shape[:3])
    check_array(first, 4, budget, "volume")
    try:
        offset = int(image.dataobj.offset)
        raw = int(np.prod(image.shape, dtype=np.int64)) * image.get_data_dtype().itemsize
    except (AttributeError, TypeError, ValueError):
        return  # not an array proxy with a known layout: nibabel checks it
    data_file = _data_file(image, path)
    if data_file is None or data_file.name.lower().endswith((".gz", ".bz2", ".zst")):
        return
    available = data_file.stat().st_size - offset
    needed = raw if len(image.shape) <= 3 else raw // int(np.prod(image.shape[3:]))
    if needed > available:
        raise ReadError(
            f"truncated volume: the header declares {'x'.join(map(str, image.shape))} "
            f"voxels ({needed:,} bytes) but the file holds {max(available, 0):,} bytes of data"
        )


def _data_file(image: Any, path: Path) -> Path | None:
    holder = image.file_map.get("image")
    name = getattr(holder, "filename", None)
    return Path(name) if name else path


def _first_volume(image: Any) -> np.ndarray:
    """Scaled float data of the first 3D volume, without reading the others."""
    proxy = image.dataobj
    ndim = len(image.shape)
    if ndim == 2:
        data = np.asarray(proxy)[:, :, None]
    elif ndim == 3:
        data = np.asarray(proxy)
    else:
        data = np.asarray(proxy[(slice(None),) * 3 + (0,) * (ndim - 3)])
    if data.dtype.names:
        raise ReadError("RGB/structured volumes are not supported")
    if np.iscomplexobj(data):
        data = np.abs(data)
    return data.astype(np.float32, copy=False)


def _format_name(image: Any) -> str:
    return {"Nifti1Image": "NIfTI-1", "Nifti2Image": "NIfTI-2", "MGHImage": "MGH"}.get(
        type(image).__name__, type(image).__name__.replace("Image", "")
    )


def display_mapper(volume: np.ndarray, window: str | None) -> Any:
    """One ``float slice -> uint8`` mapping for every slice of the volume."""
    if window:
        centre, width = intensity.parse_window(window)
        return lambda plane: intensity.apply_window(
            np.nan_to_num(plane, nan=-np.inf), centre, width
        )
    low, high = intensity.robust_range(_sample(volume))
    return lambda plane: intensity.scale_between(
        np.nan_to_num(plane, nan=low, posinf=high, neginf=low), low, high
    )


def _sample(volume: np.ndarray) -> np.ndarray:
    flat = volume.ravel()
    if flat.size <= PERCENTILE_SAMPLE:
        return flat
    step = flat.size // PERCENTILE_SAMPLE + 1
    return flat[::step]


def volume_items(
    volume: np.ndarray, zooms: np.ndarray, mode: str
) -> Iterator[tuple[str, np.ndarray, float]]:
    """``(item id, upright 2D plane, row/column pixel aspect)`` for a volume mode.

    ``"middle"`` gives the middle slice of each axis, ``"axial:N"`` every N-th axial
    slice from the first, ``"mip"`` the maximum-intensity projection along the axial
    (superior-inferior) axis.
    """
    if mode == "middle":
        for axis in range(3):
            index = volume.shape[axis] // 2
            yield from _slice_item(volume, zooms, axis, index)
    elif mode.startswith("axial:"):
        step = _positive_int(mode.partition(":")[2])
        for index in range(0, volume.shape[2], step):
            yield from _slice_item(volume, zooms, 2, index)
    elif mode == "mip":
        with np.errstate(invalid="ignore"):
            projection = np.nanmax(np.where(np.isfinite(volume), volume, np.nan), axis=2)
        plane = upright(np.nan_to_num(projection, nan=-np.inf))
        yield "mip", plane, float(zooms[1] / zooms[0])
    else:
        raise ReadError(f"unknown volume option {mode!r} (use middle, axial:N or mip)")


def _positive_int(text: str) -> int:
    try:
        step = int(text)
    except ValueError:
        step = 0
    if step < 1:
        raise ReadError(f"axial:N needs a positive whole N, got {text!r}")
    return step


def _slice_item(
    volume: np.ndarray, zooms: np.ndarray, axis: int, index: int
) -> Iterator[tuple[str, np.ndarray, float]]:
    plane = np.take(volume, index, axis=axis)
    if min(plane.shape) < MIN_SLICE_SIDE:
        return
    rows, cols = [zooms[a] for a in range(3) if a != axis][::-1]
    yield f"axis={axis},slice={index}", upright(plane), float(rows / cols)


def upright(plane: np.ndarray) -> np.ndarray:
    """A RAS+ plane ``(first axis, second axis)`` as displayed by radiology viewers.

    Rows run along the plane's second axis from its positive end (anterior or superior
    at the top); columns along the first from its positive end (patient's right on the
    viewer's left).
    """
    return plane.T[::-1, ::-1]


def _resize_for_aspect(pixels: np.ndarray, aspect: float) -> np.ndarray:
    """Stretch rows so that anisotropic voxels (thick slices) keep their true shape."""
    if not np.isfinite(aspect) or abs(aspect - 1.0) < 0.01:
        return pixels
    height = max(1, int(round(pixels.shape[0] * aspect)))
    resized = Image.fromarray(pixels).resize((pixels.shape[1], height), Image.Resampling.BILINEAR)
    return np.asarray(resized)


register_reader(VolumeReader())
