"""A corpus of hostile and unusual inputs, built from nothing downloaded.

Every case is made here from pydicom's bundled sample files, Pillow, nibabel, tifffile
or raw bytes. :func:`build_corpus` writes them into a folder and returns, per file name,
what ``medsort sort`` must do with it: ``None`` (sorted), ``"any"`` (sorted or skipped,
depending on the decoders installed) or a word the skip reason must contain.
"""

from __future__ import annotations

import gzip
import os
import socket
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file

SECRET = "SECRETSYNTAX"
"""Planted in a TransferSyntaxUID: it must never reach an output."""

Expect = str | None


def bundled(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with pydicom"
    return Path(path)


def _noise(shape: tuple[int, ...], seed: int, dtype: str = "uint8") -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype)
    top = np.iinfo(dtype).max
    return rng.integers(0, top, size=shape, endpoint=True).astype(dtype)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` gray pixels, with almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def bmp_declaring(width: int, height: int) -> bytes:
    """A 24-bit BMP whose header claims ``width x height`` with 16 bytes of pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = b"\x00" * 16
    size = 14 + len(info) + len(pixels)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 54) + info + pixels


def tiled_tiff_declaring(width: int, height: int, tile: int) -> bytes:
    """A gray tiled TIFF claiming ``width x height`` in ``tile``-sized tiles, all empty.

    Hand-written (tifffile would write every tile's bytes): the tile tables are all the
    file holds, so a 100000^2 claim is a few hundred kB.
    """
    n_tiles = -(-width // tile) * -(-height // tile)
    tags: list[tuple[int, int, int, int]] = []
    tables = 8 + 2 + 10 * 12 + 4
    offsets_at, counts_at = tables, tables + 4 * n_tiles
    short, long_ = 3, 4
    tags = [
        (256, long_, 1, width),
        (257, long_, 1, height),
        (258, short, 1, 8),
        (259, short, 1, 1),
        (262, short, 1, 1),
        (277, short, 1, 1),
        (322, long_, 1, tile),
        (323, long_, 1, tile),
        (324, long_, n_tiles, offsets_at),
        (325, long_, n_tiles, counts_at),
    ]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        packed = struct.pack("<HI", value, 0)[:4] if kind == short else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    tables_bytes = struct.pack(f"<{n_tiles}I", *([0] * n_tiles)) * 2
    return b"II*\x00" + struct.pack("<I", 8) + ifd + tables_bytes


def nifti_declaring(shape: tuple[int, ...], dtype: str = "int16", data: bytes = b"") -> bytes:
    """A NIfTI-1 single file whose header claims ``shape`` voxels, followed by ``data``."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    return header.binaryblock + b"\x00" * 4 + data


def _save_nifti(path: Path, data: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))


def _dicom(source: str, path: Path, **changes: object) -> None:
    ds = pydicom.dcmread(bundled(source))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


def _dicom_secret_syntax(path: Path) -> None:
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = f"1.2.840.99999.{SECRET}"
    pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=True)


def _raster_cases(folder: Path) -> dict[str, Expect]:
    gray = _noise((48, 40), 1)
    Image.fromarray(gray).save(folder / "plain.png")
    Image.fromarray(_noise((40, 48), 2, "uint16")).save(folder / "deep16.png")
    Image.fromarray(_noise((32, 32, 4), 3)).save(folder / "rgba.png")
    Image.fromarray(_noise((32, 32), 4) > 128).save(folder / "bilevel.png")
    Image.fromarray(_noise((30, 30, 3), 5)).convert("P").save(folder / "palette.png")
    Image.fromarray(_noise((36, 36, 3), 6)).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(_noise((1, 1), 7)).save(folder / "one_pixel.png")
    Image.fromarray(_noise((40, 40), 8).astype(np.float32) / 255.0, mode="F").save(
        folder / "float.tif"
    )
    frames = [Image.fromarray(_noise((24, 24), 9 + n)) for n in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(_noise((32, 32, 3), 12)).save(folder / "photo.webp")
    Image.fromarray(gray).save(folder / "png_named.jpg", format="PNG")
    Image.new("L", (12000, 12000), 40).save(folder / "large_12000.png")
    (folder / "declares_100000.png").write_bytes(png_declaring(100_000, 100_000))
    (folder / "declares_60000.bmp").write_bytes(bmp_declaring(60_000, 60_000))
    data = (folder / "plain.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(_noise((40, 40, 3), 13)).save(folder / "whole.jpg")
    (folder / "cut.jpg").write_bytes((folder / "whole.jpg").read_bytes()[:300])
    (folder / "noise.png").write_bytes(os.urandom(2048))
    expect: dict[str, Expect] = {
        name: None
        for name in (
            "plain.png", "deep16.png", "rgba.png", "bilevel.png", "palette.png", "cmyk.jpg",
            "one_pixel.png", "float.tif", "animated.gif", "photo.webp", "png_named.jpg",
            "large_12000.png", "whole.jpg",
        )
    }  # fmt: skip
    expect.update(
        {
            "declares_100000.png": "too large",
            "declares_60000.bmp": "too large",
            "cut.png": "truncated",
            "cut.jpg": "any",  # Pillow may decode a partial JPEG, or call it truncated
            "noise.png": "not a readable image",
        }
    )
    return expect


def _tiff_cases(folder: Path) -> dict[str, Expect]:
    (folder / "slide_100000.tif").write_bytes(tiled_tiff_declaring(100_000, 100_000, 512))
    (folder / "huge_tile.tif").write_bytes(tiled_tiff_declaring(70_000, 70_000, 65_536))
    import tifffile

    tifffile.imwrite(folder / "rgb16.tif", _noise((32, 32, 3), 14, "uint16"), photometric="rgb")
    return {"slide_100000.tif": "pyramid", "huge_tile.tif": "tile too large", "rgb16.tif": None}


def _volume_cases(folder: Path) -> dict[str, Expect]:
    (folder / "bomb.nii").write_bytes(nifti_declaring((2048, 2048, 2048)))
    (folder / "bomb.nii.gz").write_bytes(gzip.compress(nifti_declaring((2048, 2048, 2048))))
    (folder / "short.nii").write_bytes(nifti_declaring((64, 64, 64), data=b"\x01" * 1000))
    _save_nifti(folder / "brain.nii.gz", _noise((16, 18, 12), 15, "int16"))
    with_nan = _noise((12, 12, 12), 16, "float32")
    with_nan[0], with_nan[1] = np.nan, np.inf
    _save_nifti(folder / "nan.nii", with_nan)
    _save_nifti(folder / "series.nii", _noise((10, 10, 10, 3), 17, "uint8"))
    (folder / "zero_dims.nii").write_bytes(nifti_declaring((0, 10, 10)))
    return {
        "bomb.nii": "too large",
        "bomb.nii.gz": "too large",
        "short.nii": "truncated",
        "brain.nii.gz": None,
        "nan.nii": None,
        "series.nii": None,
        "zero_dims.nii": "any",
    }


def _dicom_cases(folder: Path) -> dict[str, Expect]:
    _dicom("CT_small.dcm", folder / "ct.dcm")
    _dicom("MR_small.dcm", folder / "rows_disagree.dcm", Rows=32)
    _dicom("MR_small.dcm", folder / "huge_frame.dcm", Rows=65535, Columns=65535)
    _dicom("MR_small.dcm", folder / "many_frames.dcm", NumberOfFrames=100000)
    _dicom_secret_syntax(folder / "secret_syntax.dcm")
    for name, source in (
        ("truncated.dcm", "MR_truncated.dcm"),
        ("report.dcm", "test-SR.dcm"),
        ("plan.dcm", "rtplan.dcm"),
        ("dose.dcm", "rtdose.dcm"),
        ("rle.dcm", "MR_small_RLE.dcm"),
        ("padded.dcm", "MR_small_padded.dcm"),
        ("jpeg2000.dcm", "JPEG2000.dcm"),
        ("no_meta.dcm", "no_meta.dcm"),
        ("big_endian.dcm", "MR_small_bigendian.dcm"),
    ):
        (folder / name).write_bytes(bundled(source).read_bytes())
    (folder / "garbage.dcm").write_bytes(b"\x00" * 128 + b"DICM" + os.urandom(600))
    return {
        "ct.dcm": None,
        "rows_disagree.dcm": "does not match",
        "huge_frame.dcm": "too large",
        "many_frames.dcm": "any",
        "secret_syntax.dcm": "any",
        "truncated.dcm": "truncated",
        "report.dcm": "no pixel data",
        "plan.dcm": "no pixel data",
        "dose.dcm": None,
        "rle.dcm": None,
        "padded.dcm": None,
        "jpeg2000.dcm": "any",
        "no_meta.dcm": "any",
        "big_endian.dcm": None,
        "garbage.dcm": "not a readable DICOM",
    }


def _filesystem_cases(folder: Path, outside: Path) -> dict[str, Expect]:
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    os.mkfifo(folder / "fifo.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "dangling.png").symlink_to(folder / "gone.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    Image.fromarray(_noise((40, 40), 20)).save(outside / "linked_target.png")
    (folder / "linked.png").symlink_to(outside / "linked_target.png")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "socket.png"))
    server.close()
    names: dict[str, Expect] = {
        "empty.png": "empty",
        "notes.txt": "not a supported image format",
        "fifo.png": "named pipe",
        "zero.png": "character device",
        "dangling.png": "broken symbolic link",
        "loop.png": "loop",
        "linked.png": None,
        "socket.png": "socket",
    }
    odd = {
        "bad_utf8_\udcff\udcfe.png": 21,
        "=cmd|calc!A1.png": 22,
        "+plus.png": 23,
        "-minus.png": 24,
        "@at.png": 25,
        "'quoted.png": 26,
        "new\nline.png": 27,
        'comma, and "quote".png': 28,
    }
    for name, seed in odd.items():
        Image.fromarray(_noise((40, 40), seed)).save(folder / name, format="PNG")
        names[name] = None
    # Pillow quotes the path in its message: the reason holds undecodable bytes too.
    (folder / "broken_\udcff.png").write_bytes(os.urandom(512))
    names["broken_\udcff.png"] = "not a readable image"
    return names


BUILDERS: tuple[Callable[[Path], dict[str, Expect]], ...] = (
    _raster_cases,
    _tiff_cases,
    _volume_cases,
    _dicom_cases,
)


def build_corpus(folder: Path, outside: Path) -> dict[str, Expect]:
    """Write every case into ``folder`` (link targets into ``outside``); name -> expectation."""
    folder.mkdir(parents=True)
    outside.mkdir(parents=True)
    expect: dict[str, Expect] = {}
    for builder in BUILDERS:
        expect.update(builder(folder))
    expect.update(_filesystem_cases(folder, outside))
    return expect


def fingerprint(folder: Path) -> dict[str, str]:
    """Content hash of every regular file, the kind of everything else (never opened)."""
    import hashlib
    import stat

    result = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        key = os.fsencode(path.relative_to(folder)).hex()
        if stat.S_ISLNK(info.st_mode):
            result[key] = f"link:{os.readlink(path)}"
        elif stat.S_ISREG(info.st_mode):
            result[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            result[key] = f"mode:{stat.S_IFMT(info.st_mode)}"
    return result
