"""DICOM files, shown as a radiologist's viewer shows them.

Stored values go through the modality LUT (rescale slope/intercept or a Modality LUT
Sequence), then the VOI transform (the user's ``--window``, else the file's VOI LUT or
window centre/width, else robust percentiles), then MONOCHROME1 inversion. Colour
images (RGB, YBR, palette) come out as RGB. The arithmetic lives in
:mod:`medsort.io.intensity`; metadata passes through the allow-list of
:mod:`medsort.io.phi`, so no patient identifier ever leaves the file.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medsort.io import intensity
from medsort.io.admission import Budget, check_array, draft_factor
from medsort.io.errors import error_text
from medsort.io.image import MedImage
from medsort.io.phi import safe_meta, scrub
from medsort.io.readers import ReadError, ReadOptions, register_reader
from medsort.lazy import lazy_module

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

pydicom = lazy_module("pydicom")  # imported with the first DICOM file (0.2 s)

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}
MAGIC_OFFSET = 128
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
NO_PIXEL_KINDS = {
    "SR": "Structured Report",
    "RTSTRUCT": "RT Structure Set",
    "RTPLAN": "RT Plan",
    "RTRECORD": "RT Treatment Record",
    "PR": "Presentation State",
    "KO": "Key Object Selection",
    "DOC": "Encapsulated Document",
    "REG": "Registration",
    "ECG": "Waveform",
    "AU": "Audio",
}


class DicomReader:
    """Any DICOM object with pixel data; one item per frame (or the middle frame)."""

    name = "dicom"

    def can_read(self, path: Path, head: bytes) -> bool:
        """DICOM by its ``DICM`` magic (any name) or by a DICOM extension."""
        return is_dicom_head(head) or path.suffix.lower() in DICOM_SUFFIXES

    def read(self, path: Path, options: ReadOptions) -> Iterator[MedImage]:
        ds = open_dataset(path)
        n_frames = number_of_frames(ds)
        check_pixel_size(ds, n_frames, options.budget)
        meta = file_meta(ds, options)
        for index in frame_indices(n_frames, options.frames):
            raw = decode_frame(ds, index, n_frames)
            height, width = raw.shape[:2]
            factor = draft_factor(width, height, options.draft_size) if is_grey(ds, raw) else 1
            pixels, voi = display_pixels(
                ds, intensity.reduce_stored(raw, factor), index, options.window
            )
            item = f"frame={index + 1}" if n_frames > 1 else ""
            shape = {"width": width, "height": height, "voi": voi}
            yield MedImage(
                pixels=pixels, path=path, item=item, meta={**meta, **shape}, drafted=factor > 1
            )


def is_dicom_head(head: bytes) -> bool:
    """The Part 10 preamble: ``DICM`` at byte 128."""
    return head[MAGIC_OFFSET : MAGIC_OFFSET + 4] == b"DICM"


@functools.cache
def _quiet_pydicom() -> None:
    """Decoders quote offending values in their warnings; values must never reach a log."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def _empty_meta() -> Dataset:
    return pydicom.dataset.Dataset()


def pixel_array(ds: Dataset, **kwargs: Any) -> np.ndarray:
    """``pydicom.pixels.pixel_array``."""
    return pydicom.pixels.pixel_array(ds, **kwargs)


def open_dataset(path: Path) -> Dataset:
    """Parse the file, or raise :class:`ReadError` naming no value from it.

    Files without the Part 10 preamble (old ``.dcm`` files) are parsed with ``force``.
    """
    _quiet_pydicom()
    with open(path, "rb") as handle:
        head = handle.read(MAGIC_OFFSET + 4)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=not is_dicom_head(head))
    except Exception as error:
        raise ReadError(
            f"not a readable DICOM file: truncated or corrupt header ({type(error).__name__})"
        ) from None
    check_pixel_data(ds)
    return ds


def check_pixel_data(ds: Dataset) -> None:
    """Raise :class:`ReadError` for objects without an image (SR, RTSTRUCT, ...)."""
    if any(keyword in ds for keyword in PIXEL_KEYWORDS):
        return
    if "Rows" in ds and "Columns" in ds and "BitsAllocated" in ds:
        raise ReadError("truncated DICOM: image attributes present but pixel data missing")
    if not _identifies_itself(ds):
        raise ReadError("not a readable DICOM file: no SOP class, modality or image attributes")
    raise ReadError(f"no pixel data ({object_kind(ds)})")


def check_pixel_size(ds: Dataset, n_frames: int, budget: Budget) -> None:
    """Refuse frames over budget, and native pixel data whose length disagrees with
    Rows x Columns x samples x frames (it would be shown as a scrambled image).

    One row of trailing padding is accepted (some writers pad); missing bytes are
    reported by the decoder as truncation.
    """
    try:
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        samples = int(ds.get("SamplesPerPixel") or 1)
    except (TypeError, ValueError):
        raise ReadError("DICOM image size attributes are not numbers") from None
    if rows <= 0 or cols <= 0:
        raise ReadError(f"DICOM declares no image size (Rows {rows}, Columns {cols})")
    # Frames go through the modality LUT as float64: 8 bytes per sample.
    check_array((rows, cols, samples), 8, budget, "DICOM frame")
    syntax = getattr(ds, "file_meta", _empty_meta()).get("TransferSyntaxUID")
    if "PixelData" not in ds or syntax is None or not syntax.is_transfer_syntax:
        return  # unknown syntaxes are the decoder's to name
    if syntax.is_encapsulated:
        return
    try:
        expected = int(pydicom.pixels.utils.get_expected_length(ds, unit="bytes"))
    except (AttributeError, TypeError, ValueError):
        return  # attributes the decoder will name
    actual = len(ds.PixelData)
    bits = int(ds.get("BitsAllocated") or 8)
    row_bytes = max(1, cols * samples * bits // 8)
    if actual - expected > row_bytes:
        raise ReadError(
            f"DICOM pixel data does not match its header: Rows {rows} x Columns {cols} x "
            f"{samples} sample(s) x {n_frames} frame(s) at {bits} bits need {expected:,} "
            f"bytes, the file holds {actual:,}"
        )


def _identifies_itself(ds: Dataset) -> bool:
    """Whether a dataset read with ``force`` looks like a real DICOM object at all."""
    meta = getattr(ds, "file_meta", _empty_meta())
    return any(k in ds for k in ("SOPClassUID", "Modality")) or "MediaStorageSOPClassUID" in meta


def object_kind(ds: Dataset) -> str:
    """A non-identifying name for what the object is, e.g. ``Structured Report``."""
    modality = str(ds.get("Modality", "")).upper()
    if modality in NO_PIXEL_KINDS:
        return NO_PIXEL_KINDS[modality]
    for source in (ds, getattr(ds, "file_meta", _empty_meta())):
        for keyword in ("SOPClassUID", "MediaStorageSOPClassUID"):
            uid = source.get(keyword)
            if uid is not None and getattr(uid, "is_valid", False):
                return str(uid.name)
    return "not an image object"


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def frame_indices(n_frames: int, frames: str) -> list[int]:
    """0-based frames to show: the middle one, or all of them."""
    if frames == "all":
        return list(range(n_frames))
    if frames != "middle":
        raise ReadError(f"unknown frames option {frames!r} (use 'middle' or 'all')")
    return [n_frames // 2]


def file_meta(ds: Dataset, options: ReadOptions) -> dict[str, Any]:
    """Non-identifying attributes shared by every item of the file."""
    meta: dict[str, Any] = {"format": "DICOM"}
    try:
        meta.update(safe_meta(ds, options.keep_tags))
    except ValueError as error:
        raise ReadError(str(error)) from None
    syntax = transfer_syntax_name(ds)
    if syntax is not None:
        meta["transfer_syntax"] = syntax
    meta["bit_depth"] = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    meta["n_frames"] = number_of_frames(ds)
    return meta


def decode_frame(ds: Dataset, index: int, n_frames: int) -> np.ndarray:
    """One frame's stored values (YBR already converted to RGB by pydicom)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if n_frames > 1:
                return pixel_array(ds, index=index)
            return pixel_array(ds)
    except Exception as error:
        reason = scrub(error_text(error), ds)
        if "less than expected" in reason or "shorter than" in reason:
            raise ReadError(f"truncated DICOM pixel data: {reason}") from None
        syntax = transfer_syntax_name(ds) or "no transfer syntax"
        raise ReadError(f"cannot decode DICOM pixel data ({syntax}): {reason}") from None


def transfer_syntax_name(ds: Dataset) -> str | None:
    """The file's transfer syntax by name (``"unknown"`` for a UID pydicom does not know)."""
    syntax = getattr(ds, "file_meta", _empty_meta()).get("TransferSyntaxUID")
    if syntax is None:
        return None
    # An unknown UID's "name" is the UID itself: free text from the file.
    return str(syntax.name) if syntax.is_transfer_syntax else "unknown"


def is_grey(ds: Dataset, raw: np.ndarray) -> bool:
    """A greyscale frame of more than one bit: its stored values can be averaged (a
    palette's indices and a binary mask's bits cannot; colour is reduced once shown)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    return (
        raw.ndim == 2 and photometric != "PALETTE COLOR" and int(ds.get("BitsAllocated") or 0) != 1
    )


def display_pixels(
    ds: Dataset, raw: np.ndarray, index: int, window: str | None
) -> tuple[np.ndarray, str]:
    """``uint8`` display pixels and which VOI transform produced them."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        return _palette(ds, raw), "palette"
    if raw.ndim == 3:
        return _colour(ds, raw), "colour"
    if int(ds.get("BitsAllocated") or 0) == 1:
        display = intensity.scale_by_bits(raw, 1)
        voi = "binary"
    else:
        display, voi = _monochrome(ds, raw, index, window)
    if photometric == "MONOCHROME1":
        display = intensity.invert(display)
    return display, voi


def _palette(ds: Dataset, raw: np.ndarray) -> np.ndarray:
    rgb = pydicom.pixels.apply_color_lut(raw, ds)
    descriptor = ds.get("RedPaletteColorLookupTableDescriptor") or [0, 0, 16]
    bits = int(descriptor[2]) if int(descriptor[2]) in (8, 16) else 16
    return intensity.scale_by_bits(rgb, bits) if rgb.dtype != np.uint8 else rgb


def _colour(ds: Dataset, raw: np.ndarray) -> np.ndarray:
    if raw.dtype == np.uint8:
        return raw[:, :, :3]
    bits = int(ds.get("BitsStored") or raw.dtype.itemsize * 8)
    return intensity.scale_by_bits(raw[:, :, :3], bits)


def _monochrome(
    ds: Dataset, raw: np.ndarray, index: int, window: str | None
) -> tuple[np.ndarray, str]:
    values = modality_values(ds, raw, index)
    if window:
        centre, width = intensity.parse_window(window)
        return intensity.apply_window(values, centre, width), f"window {centre:g},{width:g}"
    file_window = frame_window(ds, index)
    if file_window is None and "VOILUTSequence" in ds:
        return _voi_lut(ds, values), "file VOI LUT"
    if file_window is not None:
        centre, width, function = file_window
        display = intensity.apply_window(values, centre, width, function)
        return display, f"file window {centre:g},{width:g}"
    return intensity.scale_to_uint8(values), "percentile"


def modality_values(ds: Dataset, raw: np.ndarray, index: int) -> np.ndarray:
    """Stored values through the modality LUT (per-frame rescale for enhanced objects)."""
    if "ModalityLUTSequence" in ds:
        return pydicom.pixels.apply_modality_lut(raw, ds).astype(np.float64)
    slope = _frame_value(ds, index, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _frame_value(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
    if slope is None and intercept is None:
        return raw
    return intensity.apply_rescale(
        raw, 1.0 if slope is None else slope, 0.0 if intercept is None else intercept
    )


def frame_window(ds: Dataset, index: int) -> tuple[float, float, str] | None:
    """The file's first window centre/width for this frame, if any (and valid)."""
    centre = _frame_value(ds, index, "FrameVOILUTSequence", "WindowCenter")
    width = _frame_value(ds, index, "FrameVOILUTSequence", "WindowWidth")
    if centre is None or width is None or width <= 0:
        return None
    function = _frame_text(ds, index, "FrameVOILUTSequence", "VOILUTFunction") or "LINEAR"
    return centre, width, function


def _voi_lut(ds: Dataset, values: np.ndarray) -> np.ndarray:
    lut = ds.VOILUTSequence[0]
    output = pydicom.pixels.apply_voi_lut(np.asarray(values), ds, prefer_lut=True)
    bits = int(lut.LUTDescriptor[2])
    top = float(np.max(lut.LUTData)) if "LUTData" in lut else 0.0
    return intensity.scale_by_bits(output, max(bits, int(np.ceil(np.log2(top + 1))) if top else 1))


def _frame_value(ds: Dataset, index: int, sequence: str, keyword: str) -> float | None:
    element = _frame_element(ds, index, sequence, keyword)
    if element is None:
        return None
    value = element[0] if isinstance(element, (list, pydicom.multival.MultiValue)) else element
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _frame_text(ds: Dataset, index: int, sequence: str, keyword: str) -> str | None:
    element = _frame_element(ds, index, sequence, keyword)
    return None if element is None else str(element).upper()


def _frame_element(ds: Dataset, index: int, sequence: str, keyword: str) -> Any:
    """``keyword`` from the frame's functional groups, the shared ones, or the top level."""
    for groups, position in (
        ("PerFrameFunctionalGroupsSequence", index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        items = ds.get(groups)
        if items is None or len(items) <= position:
            continue
        inner = items[position].get(sequence)
        if inner and keyword in inner[0] and inner[0].get(keyword) not in (None, ""):
            return inner[0].get(keyword)
    value = ds.get(keyword)
    return None if value in (None, "") else value


register_reader(DicomReader(), first=True)
