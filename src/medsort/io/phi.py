"""What DICOM metadata may leave a file: an allow-list, never a block-list.

Only the keywords in :data:`ALLOWED_TAGS` (device and acquisition attributes that do
not identify a patient) are copied into :attr:`MedImage.meta`, and from there into
``items.csv``, the cache and the report. Everything else (names, IDs, dates,
institutions, free text) stays in the file, unless the user names a keyword with
``ReadOptions.keep_tags``. Error messages pass through :func:`scrub` so that a value
quoted by a decoder cannot leak either.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from medsort.lazy import lazy_module

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

pydicom = lazy_module("pydicom")  # imported when a DICOM file is met

ALLOWED_TAGS: dict[str, str] = {
    "Modality": "modality",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "model",
    "BodyPartExamined": "body_part",
    "ViewPosition": "view_position",
    "PixelSpacing": "pixel_spacing",
    "SliceThickness": "slice_thickness",
    "BitsStored": "bits_stored",
    "PhotometricInterpretation": "photometric",
    "BurnedInAnnotation": "burned_in_annotation",
    "RecognizableVisualFeatures": "recognizable_visual_features",
}
"""DICOM keyword → ``meta`` key, the only attributes copied by default."""

IDENTIFYING_TAGS: frozenset[str] = frozenset(
    {
        "PatientName",
        "PatientID",
        "OtherPatientIDs",
        "OtherPatientNames",
        "PatientBirthDate",
        "PatientBirthName",
        "PatientMotherBirthName",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "AccessionNumber",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy",
        "OperatorsName",
        "RequestingPhysician",
        "StudyID",
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "StationName",
        "DeviceSerialNumber",
    }
)
"""Well-known identifying keywords, documented for users and used by the tests.

The allow-list design does not depend on this set being complete."""

SCRUB_MIN_LENGTH = 4
"""Dataset values shorter than this are not searched for in error messages."""

REDACTED = "[removed]"

FREE_TEXT_VRS = frozenset(
    {"PN", "LO", "SH", "LT", "ST", "UT", "UC", "DA", "DT", "TM", "AE", "AS", "UI", "UR"}
)
"""Value representations that can carry identifying text (coded strings cannot)."""


def check_keep_tags(keep_tags: Iterable[str]) -> tuple[str, ...]:
    """Validate user-named keywords; raise ``ValueError`` for unknown ones."""
    names = tuple(keep_tags)
    unknown = [name for name in names if name not in pydicom.datadict.keyword_dict]
    if unknown:
        raise ValueError(f"Unknown DICOM keyword(s) in keep_tags: {', '.join(unknown)}")
    return names


def safe_meta(ds: Dataset, keep_tags: Iterable[str] = ()) -> dict[str, Any]:
    """Non-identifying attributes of ``ds`` as plain ``str``/``int``/``float`` values.

    Parameters
    ----------
    ds : Dataset
        The DICOM dataset (pixel data is not touched).
    keep_tags : iterable of str
        Extra keywords the user explicitly allowed; copied under their own name.
    """
    meta: dict[str, Any] = {}
    for keyword, key in ALLOWED_TAGS.items():
        value = _plain(ds.get(keyword))
        if value != "":
            meta[key] = value
    for keyword in check_keep_tags(keep_tags):
        value = _plain(ds.get(keyword))
        if value != "":
            meta[keyword] = value
    return meta


def _plain(element_value: Any) -> str | int | float:
    """A DICOM value as ``str``, ``int`` or ``float``; ``""`` when absent or unusable."""
    value = getattr(element_value, "value", element_value)
    if value is None or isinstance(value, (bytes, bytearray, pydicom.dataset.Dataset)):
        return ""
    if isinstance(value, (pydicom.multival.MultiValue, list, tuple)):
        parts = [_plain(part) for part in value]
        return "\\".join(str(part) for part in parts)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value).strip()


def scrub(text: str, ds: Dataset | None) -> str:
    """``text`` with every string value held in ``ds`` (outside the allow-list) removed.

    Applied to decoder error messages before they reach ``skipped.csv`` or a log.
    """
    if ds is None:
        return text
    for value in sorted(set(_string_values(ds)), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def _string_values(ds: Dataset) -> Iterator[str]:
    """Searchable text of the dataset and of its ``file_meta`` group (a decoder quotes
    the TransferSyntaxUID, which a crafted file can fill with any text)."""
    allowed = set(ALLOWED_TAGS)
    meta = getattr(ds, "file_meta", None)
    elements = [
        *(meta.iterall() if isinstance(meta, pydicom.dataset.Dataset) else ()),
        *ds.iterall(),
    ]
    for element in elements:
        if element.keyword in allowed or element.VR not in FREE_TEXT_VRS:
            continue
        values = (
            element.value
            if isinstance(element.value, (pydicom.multival.MultiValue, list))
            else [element.value]
        )
        for value in values:
            if isinstance(value, (str, bytes, pydicom.valuerep.PersonName)):
                text = (
                    value.decode("latin-1", "replace") if isinstance(value, bytes) else str(value)
                )
                yield from _pieces(text)


def _pieces(text: str) -> Iterator[str]:
    """The value and its ``^``-separated name parts, each long enough to search for."""
    for piece in [text, *text.replace("=", "^").split("^")]:
        piece = piece.strip()
        if len(piece) >= SCRUB_MIN_LENGTH:
            yield piece
