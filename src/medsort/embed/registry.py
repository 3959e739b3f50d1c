"""A registry of named encoders, each with its own preprocessing config (the timm pattern).

``create_encoder("efficientnet_lite0")`` builds the offline default (ONNX Runtime);
``create_encoder("efficientnet_lite0_torch")`` the same network in torch (``medsort[torch]``);
``create_encoder("biomedclip:/path/to/dir")`` passes ``/path/to/dir`` as the factory's
first argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from medsort.preprocess.config import PreprocessConfig


@runtime_checkable
class Encoder(Protocol):
    """What the pipeline needs from an image encoder."""

    name: str
    """Identifies the weights and preprocessing; part of every cache key."""
    config: PreprocessConfig
    dim: int

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Map a normalised ``(B, 3, S, S)`` float32 array to ``(B, dim)`` float32 features."""
        ...


@runtime_checkable
class TextEncoder(Encoder, Protocol):
    """An encoder that also embeds text into the same space (CLIP-style)."""

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Map texts to ``(len(texts), dim)`` float32 features."""
        ...


EncoderFactory = Callable[..., Encoder]
_REGISTRY: dict[str, EncoderFactory] = {}
_TEXT_ENCODERS: set[str] = {"biomedclip"}  # lazily registered below, so named here


def register_encoder(name: str, text: bool = False) -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator that makes ``factory`` available as ``create_encoder(name)``.

    ``text=True`` declares that its encoders also embed text (:class:`TextEncoder`).
    """

    def add(factory: EncoderFactory) -> EncoderFactory:
        _REGISTRY[name] = factory
        if text:
            _TEXT_ENCODERS.add(name)
        return factory

    return add


def encoder_has_text(spec: str) -> bool:
    """Whether the encoder ``spec`` names embeds text too, known without building it."""
    return spec.partition(":")[0] in _TEXT_ENCODERS


def list_encoders() -> list[str]:
    _load_builtin_encoders()
    return sorted(_REGISTRY)


def create_encoder(spec: str, **kwargs: object) -> Encoder:
    """Build an encoder from ``"name"`` or ``"name:argument"``."""
    _load_builtin_encoders()
    name, _, argument = spec.partition(":")
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"Unknown encoder {name!r}. Known encoders: {known}.")
    args = (argument,) if argument else ()
    return _REGISTRY[name](*args, **kwargs)


def _load_builtin_encoders() -> None:
    # Importing the module runs its @register_encoder decorators (it imports no runtime).
    from medsort.embed import onnx_encoder

    for variant in onnx_encoder.VARIANTS:
        _REGISTRY.setdefault(variant + "_torch", _torch_lite(variant))
    _REGISTRY.setdefault("biomedclip", _biomedclip)


def _torch_lite(variant: str) -> EncoderFactory:
    def create(device: str = "auto") -> Encoder:
        # Imported on use: torch is the optional extra medsort[torch].
        try:
            from medsort.embed.efficientnet import EfficientNetLiteEncoder
        except ImportError as error:
            raise ImportError(
                f"The {variant}_torch encoder needs torch: pip install 'medsort[torch]' "
                "(CPU-only: see the README)."
            ) from error
        return EfficientNetLiteEncoder(variant, device=device)

    return create


def _biomedclip(*args: object, **kwargs: object) -> Encoder:
    # Imported on use: transformers takes seconds to import, and is an optional extra.
    try:
        from medsort.embed.biomedclip import create_biomedclip
    except ImportError as error:
        raise ImportError(
            "The biomedclip encoder needs torch and transformers: pip install "
            "'medsort[biomedclip]' (CPU-only torch: see the README)."
        ) from error
    return create_biomedclip(*args, **kwargs)  # type: ignore[arg-type]
