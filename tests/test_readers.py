"""Raster reading: bit depths, colour modes, and broken files that must not stop a run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsort.io import ReadError, read_file
from medsort.io.errors import error_text
from medsort.io.intensity import apply_window, parse_window, scale_to_uint8


def test_8bit_gray_png_is_read_unchanged(tmp_path: Path) -> None:
    pixels = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) % 256
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "a.png")
    [image] = read_file(tmp_path / "a.png")
    assert image.pixels.dtype == np.uint8
    assert image.pixels.shape == (48, 64)
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.meta["format"] == "PNG" and image.meta["bit_depth"] == 8
    assert image.rgb().shape == (48, 64, 3)


def test_16bit_png_is_scaled_not_truncated(tmp_path: Path) -> None:
    # 12-bit detector values: truncating to 8 bits would saturate nearly everything.
    values = np.linspace(0, 4095, 100 * 100).reshape(100, 100).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "xray16.png")
    [image] = read_file(tmp_path / "xray16.png")
    assert image.meta["bit_depth"] == 16
    assert image.pixels.dtype == np.uint8
    assert image.pixels.min() == 0 and image.pixels.max() == 255
    # monotone and spread over the whole range, not clipped at one value
    assert len(np.unique(image.pixels)) > 200
    assert np.all(np.diff(image.pixels.ravel().astype(int)) >= 0)


def test_float_tiff_with_nan_is_scaled(tmp_path: Path) -> None:
    values = np.linspace(-1000.0, 3000.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    values[0, 0] = np.nan
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    [image] = read_file(tmp_path / "float.tif")
    assert image.pixels.dtype == np.uint8
    assert image.pixels[0, 0] == 0
    assert image.pixels[-1, -1] == 255


def test_rgba_and_palette_become_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[:5, :, 3] = 0  # transparent top half composites onto black
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    [image] = read_file(tmp_path / "rgba.png")
    assert image.pixels.shape == (10, 10, 3)
    assert image.pixels[0, 0].tolist() == [0, 0, 0]
    assert image.pixels[9, 9].tolist() == [200, 0, 0]

    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "palette.png")
    [image] = read_file(tmp_path / "palette.png")
    assert image.pixels.shape == (10, 10, 3)


def test_grey_with_alpha_stays_grey(tmp_path: Path) -> None:
    grey_alpha = np.zeros((10, 10, 2), dtype=np.uint8)
    grey_alpha[..., 0] = 120
    grey_alpha[5:, :, 1] = 255  # transparent top half composites onto black
    Image.fromarray(grey_alpha, mode="LA").save(tmp_path / "la.png")
    [image] = read_file(tmp_path / "la.png")
    assert image.is_gray and image.pixels.shape == (10, 10)
    assert image.pixels[0, 0] == 0 and image.pixels[9, 9] == 120


def test_bmp_and_jpeg(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.bmp")
    Image.fromarray(array).save(tmp_path / "a.jpg", quality=95)
    [bmp] = read_file(tmp_path / "a.bmp")
    [jpeg] = read_file(tmp_path / "a.jpg")
    np.testing.assert_array_equal(bmp.pixels, array)
    assert jpeg.meta["format"] == "JPEG" and jpeg.pixels.shape == (20, 30, 3)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.png", b"", "empty file"),
        ("notes.txt", b"hello", "not a supported image format"),
        ("fake.png", b"this is not a png at all", "not a readable image"),
    ],
)
def test_broken_files_raise_a_clear_reason(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ReadError, match=reason):
        read_file(tmp_path / name)


def test_truncated_png_raises_read_error(tmp_path: Path) -> None:
    array = np.random.default_rng(1).integers(0, 255, (200, 200), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match="truncated|corrupt"):
        read_file(tmp_path / "cut.png")


def test_window_presets_and_linear_window() -> None:
    assert parse_window("lung") == (-600.0, 1500.0)
    assert parse_window("40,400") == (40.0, 400.0)
    with pytest.raises(ValueError, match="preset"):
        parse_window("liver-ish")
    hu = np.array([-1000.0, 40.0, 1000.0])
    shown = apply_window(hu, centre=40.0, width=400.0)
    assert shown.tolist() == [0, 128, 255]


def test_scale_keeps_small_integer_images() -> None:
    values = np.array([[0, 10], [20, 255]], dtype=np.int32)
    np.testing.assert_array_equal(scale_to_uint8(values), values.astype(np.uint8))


def test_a_reader_that_fails_to_load_is_reported_not_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medsort.io import readers

    monkeypatch.setattr(readers, "OPTIONAL_READERS", ("medsort.io.no_such_reader",))
    monkeypatch.setattr(readers, "UNAVAILABLE_READERS", {})
    monkeypatch.setattr(readers, "_builtin_loaded", False)
    with pytest.warns(UserWarning, match="no_such_reader reader is unavailable"):
        readers._load_builtin_readers()
    path = tmp_path / "scan.xyz"
    path.write_bytes(b"\0" * 256)
    with pytest.raises(ReadError, match="readers that failed to load: no_such_reader"):
        read_file(path)


FORMAT_LIBRARIES = ("pydicom", "tifffile", "nibabel")


def _modules_after(code: str, tmp_path: Path) -> list[str]:
    """The format libraries in ``sys.modules`` after ``code`` ran in a fresh interpreter."""
    src = Path(__file__).resolve().parents[1] / "src"
    probe = f"import sys\n{code}\nprint(*[m for m in {FORMAT_LIBRARIES!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return lines[-1].split() if lines else []


def test_format_libraries_are_imported_with_the_first_file_of_theirs(tmp_path: Path) -> None:
    """Reading a folder of PNGs (and failing on a .csv) imports none of pydicom, tifffile
    or nibabel (0.3 s); a DICOM file then brings in pydicom, and reads as before."""
    Image.new("L", (32, 32), 90).save(tmp_path / "plain.png")
    (tmp_path / "labels.csv").write_text("path,label\n")
    png_only = (
        "from pathlib import Path\n"
        "from medsort.io import ReadError, read_file\n"
        "assert read_file(Path('plain.png'))[0].pixels.shape == (32, 32)\n"
        "try:\n    read_file(Path('labels.csv'))\nexcept ReadError:\n    pass\n"
    )
    assert _modules_after(png_only, tmp_path) == []

    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = (np.arange(64, dtype=np.uint16) * 100).tobytes()
    ds.save_as(tmp_path / "slice.dcm", enforce_file_format=True)
    dicom = png_only + "assert read_file(Path('slice.dcm'))[0].pixels.shape == (8, 8)\n"
    assert _modules_after(dicom, tmp_path) == ["pydicom"]


def test_skip_reasons_are_one_stable_line() -> None:
    """The same failure gives the same reason in every run: no object address, no
    folder path, one line."""
    error = ValueError(
        "pillow: cannot identify image file <_io.BytesIO object at 0x7f66b14ff920>\n  more"
    )
    assert error_text(error) == "pillow: cannot identify image file <_io.BytesIO object> more"
    missing = FileNotFoundError(2, "No such file or directory", "/home/dr/patients/scan.nii")
    assert error_text(missing) == "No such file or directory scan.nii"
    assert error_text(RuntimeError()) == "RuntimeError"
    quoted = OSError(f"cannot identify image file '{Path('/home/dr/x/notes.png')}'")
    assert (
        error_text(quoted, Path("/home/dr/x/notes.png")) == "cannot identify image file 'notes.png'"
    )
