"""DICOM reading: displayed pixels computed by hand from each file's own attributes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medsort.io import ReadError, ReadOptions, find_reader, read_file


def bundled(name: str) -> Path:
    """A file bundled in the pydicom wheel (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with pydicom"
    return Path(path)


def linear_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 LINEAR, written out independently of medsort."""
    values = values.astype(np.float64)
    out = ((values - (centre - 0.5)) / (width - 1) + 0.5) * 255.0
    out = np.where(values <= centre - 0.5 - (width - 1) / 2, 0.0, out)
    out = np.where(values > centre - 0.5 + (width - 1) / 2, 255.0, out)
    return np.round(np.clip(out, 0, 255)).astype(np.uint8)


def save_variant(tmp_path: Path, source: str, name: str, **attributes: object) -> Path:
    ds = pydicom.dcmread(bundled(source))
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    target = tmp_path / name
    ds.save_as(target)
    return target


def test_ct_window_option_applies_rescale_then_window() -> None:
    path = bundled("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    [image] = read_file(path, ReadOptions(window="40,400"))
    np.testing.assert_array_equal(image.pixels, linear_window(hu, 40, 400))
    [lung] = read_file(path, ReadOptions(window="lung"))
    np.testing.assert_array_equal(lung.pixels, linear_window(hu, -600, 1500))
    assert image.meta["voi"] == "window 40,400"


def test_file_window_is_used_with_rescale(tmp_path: Path) -> None:
    path = save_variant(tmp_path, "CT_small.dcm", "ct.dcm", WindowCenter="50", WindowWidth="350")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    [image] = read_file(path)
    np.testing.assert_array_equal(image.pixels, linear_window(hu, 50, 350))
    assert image.meta["voi"].startswith("file window")


def test_mr_file_window() -> None:
    path = bundled("MR_small.dcm")
    ds = pydicom.dcmread(path)
    [image] = read_file(path)
    expected = linear_window(ds.pixel_array, float(ds.WindowCenter), float(ds.WindowWidth))
    np.testing.assert_array_equal(image.pixels, expected)


def test_ct_without_window_uses_percentiles_not_truncation() -> None:
    [image] = read_file(bundled("CT_small.dcm"))
    assert image.meta["voi"] == "percentile"
    assert image.pixels.min() == 0 and image.pixels.max() == 255
    assert len(np.unique(image.pixels)) > 100


def test_multiple_window_values_use_the_first(tmp_path: Path) -> None:
    path = save_variant(
        tmp_path, "CT_small.dcm", "ct.dcm", WindowCenter=["40", "-600"], WindowWidth=["400", "1500"]
    )
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    [image] = read_file(path)
    np.testing.assert_array_equal(image.pixels, linear_window(hu, 40, 400))


def test_voi_lut_sequence(tmp_path: Path) -> None:
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    del ds.WindowCenter
    del ds.WindowWidth
    first, entries = 0, 4096
    lut = Dataset()
    lut.LUTDescriptor = [entries, first, 16]
    lut.add_new("LUTData", "US", [int(v) for v in np.linspace(0, 65535, entries)])
    ds.VOILUTSequence = Sequence([lut])
    ds.save_as(tmp_path / "lut.dcm")
    [image] = read_file(tmp_path / "lut.dcm")
    table = np.asarray(lut.LUTData, dtype=np.float64)
    stored = np.clip(ds.pixel_array, first, first + entries - 1) - first
    expected = np.round(table[stored] / 65535 * 255).astype(np.uint8)
    np.testing.assert_array_equal(image.pixels, expected)
    assert image.meta["voi"] == "file VOI LUT"


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    plain = read_file(bundled("MR_small.dcm"))[0].pixels
    path = save_variant(tmp_path, "MR_small.dcm", "m1.dcm", PhotometricInterpretation="MONOCHROME1")
    [image] = read_file(path)
    np.testing.assert_array_equal(image.pixels, 255 - plain)
    assert image.meta["photometric"] == "MONOCHROME1"


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_compressed_transfer_syntaxes_match_uncompressed(name: str) -> None:
    plain = read_file(bundled("MR_small.dcm"))[0]
    [image] = read_file(bundled(name))
    np.testing.assert_array_equal(image.pixels, plain.pixels)
    assert image.meta["transfer_syntax"] != plain.meta["transfer_syntax"]


def test_jpeg_ls_decodes() -> None:
    plain = read_file(bundled("MR_small.dcm"))[0]
    [image] = read_file(bundled("MR_small_jpeg_ls_lossless.dcm"))
    np.testing.assert_array_equal(image.pixels, plain.pixels)


def test_ybr_becomes_rgb() -> None:
    [rgb] = read_file(bundled("SC_rgb_small_odd.dcm"))
    [ybr] = read_file(bundled("SC_rgb_small_odd_jpeg.dcm"))  # YBR_FULL, lossy JPEG
    assert ybr.pixels.shape == rgb.pixels.shape == (3, 3, 3)
    difference = np.abs(ybr.pixels.astype(int) - rgb.pixels.astype(int))
    assert difference.mean() < 8  # converted; an unconverted YBR image differs by ~100


def test_uncompressed_ybr_full_422_is_converted() -> None:
    ds = pydicom.dcmread(bundled("SC_ybr_full_422_uncompressed.dcm"))
    raw = pydicom.pixels.pixel_array(ds, raw=True)  # still YBR
    expected = pydicom.pixels.convert_color_space(raw, "YBR_FULL", "RGB")
    [image] = read_file(bundled("SC_ybr_full_422_uncompressed.dcm"))
    np.testing.assert_array_equal(image.pixels, expected)


def test_multi_frame_all_and_middle() -> None:
    path = bundled("rtdose.dcm")
    ds = pydicom.dcmread(path)
    n_frames = int(ds.NumberOfFrames)
    items = read_file(path, ReadOptions(frames="all"))
    assert [image.item for image in items] == [f"frame={i}" for i in range(1, n_frames + 1)]
    [middle] = read_file(path, ReadOptions(frames="middle"))
    assert middle.item == f"frame={n_frames // 2 + 1}"
    np.testing.assert_array_equal(middle.pixels, items[n_frames // 2].pixels)
    assert not np.array_equal(items[0].pixels, items[n_frames // 2].pixels)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("test-SR.dcm", "Structured Report"),
        ("rtstruct.dcm", "RT Structure Set"),
        ("rtplan.dcm", "RT Plan"),
    ],
)
def test_objects_without_pixels_are_skipped_with_reason(name: str, kind: str) -> None:
    with pytest.raises(ReadError, match=rf"^no pixel data \({kind}\)$"):
        read_file(bundled(name))


def test_dicom_without_extension_is_found(tmp_path: Path) -> None:
    target = tmp_path / "IM000001"
    shutil.copy(bundled("CT_small.dcm"), target)
    assert find_reader(target).name == "dicom"
    [image] = read_file(target)
    assert image.meta["modality"] == "CT"
    (tmp_path / "notes").write_bytes(b"\x00" * 200)
    assert find_reader(tmp_path / "notes") is None


def test_truncated_dicom_gives_clear_error(tmp_path: Path) -> None:
    data = bundled("CT_small.dcm").read_bytes()
    (tmp_path / "half.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match="truncated"):
        read_file(tmp_path / "half.dcm")
    with pytest.raises(ReadError, match="^truncated DICOM pixel data"):
        read_file(bundled("MR_truncated.dcm"))
    (tmp_path / "head.dcm").write_bytes(data[:300])
    with pytest.raises(ReadError, match="truncated|corrupt|no pixel data"):
        read_file(tmp_path / "head.dcm")


def test_binary_segmentation_is_full_range() -> None:
    [image] = read_file(bundled("liver_1frame.dcm"))
    assert set(np.unique(image.pixels)) <= {0, 255}
    assert image.pixels.max() == 255


def test_metadata_is_the_allow_list() -> None:
    [image] = read_file(bundled("CT_small.dcm"))
    meta = image.meta
    assert meta["modality"] == "CT"
    assert meta["bits_stored"] == 16 and meta["bit_depth"] == 16
    assert meta["photometric"] == "MONOCHROME2"
    assert meta["transfer_syntax"] == "Explicit VR Little Endian"
    assert meta["pixel_spacing"] == "0.661468\\0.661468"
    assert meta["format"] == "DICOM" and meta["width"] == 128 and meta["height"] == 128
    for value in meta.values():
        assert isinstance(value, (str, int, float))
    text = repr(meta)
    for secret in ("CompressedSamples", "1CT1", "JFK IMAGING"):
        assert secret not in text


def test_keep_tags_copies_only_named_keywords() -> None:
    [image] = read_file(bundled("CT_small.dcm"), ReadOptions(keep_tags=("PatientAge",)))
    assert image.meta["PatientAge"] == "000Y"
    assert "PatientName" not in image.meta
    with pytest.raises(ReadError, match="Unknown DICOM keyword"):
        read_file(bundled("CT_small.dcm"), ReadOptions(keep_tags=("NotAKeyword",)))


def test_burned_in_annotation_is_recorded(tmp_path: Path) -> None:
    path = save_variant(tmp_path, "CT_small.dcm", "b.dcm", BurnedInAnnotation="YES")
    [image] = read_file(path)
    assert image.meta["burned_in_annotation"] == "YES"


def test_thumbnails_of_several_frames_in_one_read() -> None:
    from medsort.report.thumbnails import thumbnail_uri, thumbnail_uris

    path = bundled("rtdose.dcm")  # multi-frame
    options = ReadOptions(frames="all")
    uris = thumbnail_uris(path, {"frame=2", "frame=5", "frame=99"}, options)
    assert set(uris) == {"frame=2", "frame=5"}  # a missing item is left out, not faked
    assert uris["frame=2"].startswith("data:image/jpeg;base64,")
    assert uris["frame=2"] != uris["frame=5"]
    assert thumbnail_uri(path, "frame=5", options) == uris["frame=5"]


def test_undecodable_compressed_dicom_names_its_transfer_syntax(tmp_path: Path) -> None:
    ds = pydicom.dcmread(bundled("JPEG2000.dcm"))
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51 not a codestream"])
    ds.save_as(tmp_path / "bad_j2k.dcm")
    with pytest.raises(ReadError, match=r"^cannot decode DICOM pixel data \(JPEG 2000"):
        read_file(tmp_path / "bad_j2k.dcm")
