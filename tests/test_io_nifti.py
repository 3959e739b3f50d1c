"""NIfTI volumes: upright slices, volume modes, windowing, NaN voxels, 4D files."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from medsort.io import ReadError, ReadOptions, find_reader, read_file


def save(
    tmp_path: Path, data: np.ndarray, affine: np.ndarray | None = None, name: str = "v.nii.gz"
) -> Path:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def by_item(path: Path, options: ReadOptions | None = None) -> dict[str, np.ndarray]:
    return {image.item: image.pixels for image in read_file(path, options)}


def test_middle_slices_shapes_and_ids(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((20, 30, 10)).astype(np.float32)
    items = by_item(save(tmp_path, data))
    assert set(items) == {"axis=0,slice=10", "axis=1,slice=15", "axis=2,slice=5"}
    assert items["axis=0,slice=10"].shape == (10, 30)  # rows: superior-inferior
    assert items["axis=1,slice=15"].shape == (10, 20)
    assert items["axis=2,slice=5"].shape == (30, 20)  # rows: anterior-posterior


def test_axial_every_nth_and_mip(tmp_path: Path) -> None:
    data = np.zeros((16, 12, 10), dtype=np.float32)
    data[3, 4, 7] = 100.0  # one bright voxel: the MIP must show it
    data[0, 0, 0] = 50.0
    path = save(tmp_path, data)
    items = by_item(path, ReadOptions(volume="axial:3"))
    assert list(items) == [f"axis=2,slice={k}" for k in (0, 3, 6, 9)]
    [mip] = read_file(path, ReadOptions(volume="mip"))
    assert mip.item == "mip" and mip.pixels.shape == (12, 16)
    # upright: row = (ny-1-y), col = (nx-1-x)
    assert mip.pixels[12 - 1 - 4, 16 - 1 - 3] == 255
    assert mip.pixels[11, 15] == 128  # 50/100 of the range
    with pytest.raises(ReadError, match="axial:N"):
        read_file(path, ReadOptions(volume="axial:0"))
    with pytest.raises(ReadError, match="unknown volume option"):
        read_file(path, ReadOptions(volume="sideways"))


def test_orientation_is_upright_whatever_the_affine(tmp_path: Path) -> None:
    ras = np.zeros((8, 10, 6), dtype=np.float32)
    ras[7, 9, 3] = 10.0  # patient right, anterior
    ras[0, 0, 3] = 5.0  # patient left, posterior
    ras_items = by_item(save(tmp_path, ras, name="ras.nii"))
    axial = ras_items["axis=2,slice=3"]
    assert axial[0, 0] == 255  # anterior at the top, patient's right on the viewer's left
    assert axial[-1, -1] == 128
    # The same anatomy stored left-to-right (LAS) with a flipped affine shows the same.
    las_affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    las_affine[0, 3] = 7.0
    las_items = by_item(save(tmp_path, ras[::-1].copy(), las_affine, name="las.nii"))
    for item, pixels in ras_items.items():
        np.testing.assert_array_equal(las_items[item], pixels)


def test_superior_is_at_the_top_of_coronal_and_sagittal(tmp_path: Path) -> None:
    data = np.zeros((8, 8, 8), dtype=np.float32)
    data[:, :, 7] = 10.0  # the most superior plane
    items = by_item(save(tmp_path, data))
    for item in ("axis=0,slice=4", "axis=1,slice=4"):
        assert np.all(items[item][0] == 255) and np.all(items[item][1:] == 0)


def test_window_applies_to_hounsfield_volumes(tmp_path: Path) -> None:
    hu = np.linspace(-1000, 1000, 8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    [axial] = [
        image
        for image in read_file(save(tmp_path, hu), ReadOptions(window="40,400"))
        if image.item == "axis=2,slice=4"
    ]
    plane = hu[:, :, 4].T[::-1, ::-1].astype(np.float64)
    low = 40 - 0.5 - (400 - 1) / 2
    expected = np.round(np.clip((plane - low) / (400 - 1), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(axial.pixels, expected)


def test_nan_and_inf_voxels(tmp_path: Path) -> None:
    data = np.arange(6 * 6 * 6, dtype=np.float32).reshape(6, 6, 6)
    data[0, 0, :] = np.nan
    data[5, 5, :] = np.inf
    items = by_item(save(tmp_path, data))
    axial = items["axis=2,slice=3"]
    assert axial.dtype == np.uint8
    assert axial[-1, -1] == 0  # NaN at x=0,y=0 → lowest
    assert axial[0, 0] == 255  # +inf at x=5,y=5 → highest
    assert len(np.unique(axial)) > 10  # the finite voxels still spread over the range


def test_four_d_uses_the_first_volume(tmp_path: Path) -> None:
    data = np.zeros((6, 6, 6, 2), dtype=np.float32)
    data[..., 0] = np.arange(6)[:, None, None]  # gradient along x
    data[..., 1] = 1000.0
    items = by_item(save(tmp_path, data))
    axial = items["axis=2,slice=3"]
    assert axial[0, 0] == 255 and axial[0, -1] == 0


def test_thick_slices_keep_their_aspect(tmp_path: Path) -> None:
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    items = by_item(save(tmp_path, np.ones((12, 12, 5), np.float32), affine))
    assert items["axis=1,slice=6"].shape == (15, 12)
    assert items["axis=2,slice=2"].shape == (12, 12)


def test_real_example_files() -> None:
    example = Path(data_path) / "example4d.nii.gz"
    images = read_file(example)
    assert [image.item for image in images] == [
        "axis=0,slice=64",
        "axis=1,slice=48",
        "axis=2,slice=12",
    ]
    assert images[0].meta["format"] == "NIfTI-1"
    assert images[0].meta["volume_shape"] == "128x96x24x2"
    assert read_file(Path(data_path) / "example_nifti2.nii.gz")[0].meta["format"] == "NIfTI-2"


def test_nifti_without_extension_is_found(tmp_path: Path) -> None:
    target = tmp_path / "scan"
    shutil.copy(Path(data_path) / "anatomical.nii", target)
    assert find_reader(target).name == "nifti"
    assert len(read_file(target)) == 3


def test_truncated_volume_gives_clear_error(tmp_path: Path) -> None:
    data = (Path(data_path) / "anatomical.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match="truncated|corrupt|not a readable"):
        read_file(tmp_path / "cut.nii")
