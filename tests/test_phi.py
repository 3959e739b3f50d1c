"""No patient identifier reaches any output: meta allow-list, scrubbed errors, full runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import make_result
from pydicom.data import get_testdata_file

from medsort.io import ReadError, read_file
from medsort.io.phi import IDENTIFYING_TAGS, safe_meta, scrub
from medsort.io.report import burned_in_section

SECRETS = {
    "PatientName": "ZZPHI^SECRET",
    "PatientID": "PHI-12345",
    "PatientBirthDate": "19011231",
    "AccessionNumber": "ACCPHI998877",
    "InstitutionName": "PHI Hospital",
    "ReferringPhysicianName": "DRPHI^WHO",
    "InstitutionAddress": "1 PHI Street",
    "OperatorsName": "OPPHI^X",
}
FORBIDDEN = ["ZZPHI", "SECRET", "PHI-12345", "19011231", "ACCPHI998877", "PHI Hospital",
             "DRPHI", "PHI Street", "OPPHI"]  # fmt: skip


def phi_dicom(source: str, target: Path, **extra: object) -> Path:
    ds = pydicom.dcmread(get_testdata_file(source, download=False), force=True)
    for keyword, value in {**SECRETS, **extra}.items():
        setattr(ds, keyword, value)
    ds.save_as(target, enforce_file_format=False)
    return target


def test_meta_never_holds_identifying_tags(tmp_path: Path) -> None:
    [image] = read_file(phi_dicom("CT_small.dcm", tmp_path / "ct.dcm"))
    text = repr(image.meta)
    for secret in FORBIDDEN:
        assert secret not in text
    ds = pydicom.dcmread(tmp_path / "ct.dcm")
    assert not set(safe_meta(ds)) & IDENTIFYING_TAGS


def test_scrub_removes_values_and_name_parts() -> None:
    ds = pydicom.Dataset()
    ds.PatientName = "ZZPHI^SECRET"
    ds.PatientID = "PHI-12345"
    ds.Modality = "CT"
    message = "decoder failed near 'ZZPHI^SECRET' (PHI-12345), part SECRET, modality CT"
    cleaned = scrub(message, ds)
    assert "ZZPHI" not in cleaned and "SECRET" not in cleaned and "PHI-12345" not in cleaned
    assert "modality CT" in cleaned


def test_decoder_errors_are_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medsort.io import dicom

    def failing(ds: pydicom.Dataset, **kwargs: object) -> np.ndarray:
        raise ValueError(f"bad frame for {ds.PatientName} at {ds.InstitutionName}")

    monkeypatch.setattr(dicom, "pixel_array", failing)
    with pytest.raises(ReadError) as caught:
        read_file(phi_dicom("CT_small.dcm", tmp_path / "ct.dcm"))
    assert "ZZPHI" not in str(caught.value) and "PHI Hospital" not in str(caught.value)
    assert "[removed]" in str(caught.value)


def test_burned_in_section_counts_items_and_groups() -> None:
    result = make_result(
        paths=["a.dcm", "b.dcm", "c.png"],
        groups=[3, 4, 3],
        item_columns={"burned_in_annotation": ["YES", "NO", ""]},
    )
    items = result.items
    section = burned_in_section(result, Path("."))
    assert "1 image(s) in 1 file(s)" in section and "Group 3: 1" in section
    assert "Group 4" not in section
    items["burned_in_annotation"] = "NO"
    assert burned_in_section(result, Path(".")) == ""


def test_full_sort_writes_no_identifier(tmp_path: Path) -> None:
    """Every output file of a real run, and the cache, is free of the planted values."""
    from medsort.pipeline import sort_folder
    from medsort.sorter import Sorter

    folder = tmp_path / "input"
    folder.mkdir()
    phi_dicom("CT_small.dcm", folder / "ct.dcm", BurnedInAnnotation="YES")
    phi_dicom("CT_small.dcm", folder / "IM0002", WindowCenter="40", WindowWidth="400")
    phi_dicom("MR_small.dcm", folder / "mr.dcm")
    phi_dicom("MR_small.dcm", folder / "mr1.dcm", PhotometricInterpretation="MONOCHROME1")
    phi_dicom("MR_small_RLE.dcm", folder / "mr_rle.dcm")
    phi_dicom("rtdose.dcm", folder / "dose.dcm")
    phi_dicom("test-SR.dcm", folder / "report.dcm")  # no pixels: skipped
    data = (folder / "mr.dcm").read_bytes()
    (folder / "cut.dcm").write_bytes(data[: len(data) - 3000])  # truncated: skipped
    out, cache = tmp_path / "out", tmp_path / "cache"
    sort_folder(folder, out, Sorter(cache=cache, progress=False))

    written = [path for path in [*out.rglob("*"), *cache.rglob("*")] if path.is_file()]
    names = {path.name for path in written}
    assert {"assignments.csv", "items.csv", "skipped.csv", "run.json", "report.html"} <= names
    assert "embeddings.sqlite" in names
    for path in written:
        content = path.read_bytes()
        for secret in FORBIDDEN:
            assert secret.encode() not in content, f"{secret} leaked into {path.name}"
    skipped = pd.read_csv(out / "skipped.csv")
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    assert reasons["report.dcm"] == "no pixel data (Structured Report)"
    assert "truncated" in reasons["cut.dcm"]
    items = pd.read_csv(out / "items.csv", keep_default_na=False)
    assert (items["burned_in_annotation"] == "YES").sum() == 1
    assert "Burned-in annotations" in (out / "report.html").read_text()
