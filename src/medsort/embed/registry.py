"""A registry of named encoders, each one timm-like config entry (:class:`EncoderEntry`).

The registry names none of its plugins: each encoder file registers its own entry
(``register(EncoderEntry(...))`` or the ``@register_encoder("name")`` decorator), the
built-in files are imported by :mod:`medsort.embed`'s ``__init__``, and other packages add
theirs through the ``medsort.encoders`` entry-point group (a module imported on first use).

A spec is ``"name"`` or ``"name:argument"``; the argument (usually a model folder, as in
``biomedclip:/path/to/dir`` or ``adapted:DIR``) is passed as the factory's first argument,
so any entry can be a prefix resolver. An entry whose weights come from a hub
(:class:`WeightsSource`) and is named without a folder is looked up in the models home
(``$MEDSORT_MODELS_DIR`` or ``<cache>/models/NAME``, filled by ``medsort models download``).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medsort.embed.cache import default_cache_dir
from medsort.preprocess.config import PreprocessConfig

ENTRY_POINT_GROUP = "medsort.encoders"


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


class LicenceWarning(UserWarning):
    """The weights of an encoder may not be used commercially (or only for research)."""


@dataclass(frozen=True)
class Licence:
    """The licence of an encoder's weights.

    Parameters
    ----------
    spdx : str
        SPDX identifier where there is one (``Apache-2.0``, ``MIT``), else a short name
        (``MSRLA``, ``Owkin-NC``).
    commercial : bool or None
        Whether the licence allows commercial use (``None``: not known).
    url : str
        Where the licence text is.
    note : str
        What else a user must know (research only, not for clinical use, ...).
    """

    spdx: str
    commercial: bool | None = True
    url: str = ""
    note: str = ""

    def warning(self, name: str) -> str | None:
        """The warning to show for encoder ``name``: ``None`` for a licence that allows
        commercial use, or an unknown one (a user's own encoder object)."""
        if self.commercial is not False:
            return None
        note = f" ({self.note})" if self.note else ""
        where = f"; see {self.url}" if self.url else ""
        return (
            f"the weights of encoder {name} are licensed {self.spdx}{note}: "
            f"not for commercial use{where}."
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "spdx": self.spdx,
            "commercial": self.commercial,
            "url": self.url,
            "note": self.note,
        }


UNKNOWN_LICENCE = Licence("unknown", commercial=None, note="check the weights' own licence")


@dataclass(frozen=True)
class WeightsSource:
    """Where an entry's weights are downloaded from, once (``medsort models download``).

    ``hub_id`` is a Hugging Face repository; ``files`` the patterns fetched from it (all
    files when empty); ``revision`` a branch, tag or commit.
    """

    hub_id: str
    files: tuple[str, ...] = ()
    revision: str | None = None


EncoderFactory = Callable[..., Encoder]


@dataclass(frozen=True)
class EncoderEntry:
    """One named encoder: how to build it and what to know about it (a timm-like config).

    Parameters
    ----------
    name : str
        Registry name; ``create_encoder("name")`` or ``create_encoder("name:ARG")``.
    factory : callable
        ``factory(*args, **kwargs) -> Encoder``; gets the spec's argument (a model folder
        for most) as its first positional argument. Import heavy libraries inside it.
    preprocess : PreprocessConfig or None
        The default preprocessing; the built encoder's ``config`` is what is used (a model
        folder's own preprocessing file may refine it).
    text : bool
        Its encoders also embed text (:class:`TextEncoder`), known without building one.
    weights : WeightsSource or None
        Where its weights are downloaded from; ``None`` when they ship with medsort or
        an installed package, or are given as a folder only.
    licence : Licence
        The weights' licence.
    modality : str
        What the weights were trained for: ``general`` (natural images), ``xray``,
        ``histology``, ``biomedical``, or ``any`` (for path-loaded encoders).
    pooling : str
        How one vector per image is formed (``cls``, ``mean``, ``cls+mean``, ``avg``).
    needs : str
        The optional extra that its factory needs (``medsort[hub]``), for messages.
    summary : str
        One line for ``medsort models list``.
    argument : str
        What the spec's argument is (``DIR``), empty when it takes none.
    check : callable or None
        ``check(folder)`` raises ``FileNotFoundError`` naming what a model folder lacks.
    """

    name: str
    factory: EncoderFactory
    preprocess: PreprocessConfig | None = None
    text: bool = False
    weights: WeightsSource | None = None
    licence: Licence = field(default=UNKNOWN_LICENCE)
    modality: str = "general"
    pooling: str = ""
    needs: str = ""
    summary: str = ""
    argument: str = ""
    check: Callable[[Path], None] | None = None


_REGISTRY: dict[str, EncoderEntry] = {}
_entry_points_loaded = False


def register(entry: EncoderEntry) -> EncoderEntry:
    """Add ``entry`` to the registry (a later entry of the same name replaces it)."""
    _REGISTRY[entry.name] = entry
    return entry


def register_encoder(
    name: str, text: bool = False, **fields: Any
) -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator that registers ``factory`` as ``create_encoder(name)``.

    ``text=True`` declares that its encoders also embed text; other keyword arguments are
    :class:`EncoderEntry` fields (``licence=``, ``modality=``, ``argument=``, ...).
    """

    def add(factory: EncoderFactory) -> EncoderFactory:
        register(EncoderEntry(name=name, factory=factory, text=text, **fields))
        return factory

    return add


def _load_entry_points() -> None:
    """Import the modules of installed packages that declare ``medsort.encoders``."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as error:  # noqa: BLE001 - a broken plugin must not stop a run
            print(
                f"medsort: warning: encoder plugin {point.name} ({point.value}) failed to "
                f"load: {error}",
                file=sys.stderr,
            )


def get_entry(spec: str) -> EncoderEntry:
    """The entry that ``spec`` (``name`` or ``name:argument``) names; ``ValueError`` if none."""
    name = spec.partition(":")[0]
    if name not in _REGISTRY:
        _load_entry_points()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"Unknown encoder {name!r}. Known encoders: {known}.")
    return _REGISTRY[name]


def list_entries() -> list[EncoderEntry]:
    """Every registered entry, by name."""
    _load_entry_points()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def list_encoders() -> list[str]:
    return [entry.name for entry in list_entries()]


def encoder_has_text(spec: str) -> bool:
    """Whether the encoder ``spec`` names embeds text too, known without building it."""
    try:
        return get_entry(spec).text
    except ValueError:
        return False


def models_home() -> Path:
    """Where ``medsort models download NAME`` puts weights by default:
    ``$MEDSORT_MODELS_DIR``, else ``<cache>/models``."""
    if "MEDSORT_MODELS_DIR" in os.environ:
        return Path(os.environ["MEDSORT_MODELS_DIR"]).expanduser()
    return default_cache_dir() / "models"


def default_model_dir(name: str) -> Path:
    """The models-home folder of encoder ``name``."""
    return models_home() / name


def resolve_argument(entry: EncoderEntry, argument: str) -> str:
    """The factory argument for ``entry``: ``argument``, or its models-home folder for an
    entry with downloadable weights named alone (``FileNotFoundError`` saying how to get
    them when that folder is missing)."""
    if argument or entry.weights is None:
        return argument
    folder = default_model_dir(entry.name)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Encoder {entry.name} has no weights in {folder}: run "
            f"`medsort models download {entry.name}` once (needs internet; Hugging Face "
            f"{entry.weights.hub_id}), or name a folder: --encoder {entry.name}:DIR."
        )
    return str(folder)


def create_encoder(spec: str, **kwargs: object) -> Encoder:
    """Build an encoder from ``"name"`` or ``"name:argument"``.

    A non-commercial or research-only licence is announced with a :class:`LicenceWarning`;
    the encoder carries its entry's licence as ``encoder.licence`` (unless it sets its own).
    """
    entry = get_entry(spec)
    argument = resolve_argument(entry, spec.partition(":")[2])
    args = (argument,) if argument else ()
    try:
        encoder = entry.factory(*args, **kwargs)
    except ImportError as error:
        if not entry.needs:
            raise
        raise ImportError(
            f"The {entry.name} encoder needs {entry.needs}: pip install '{entry.needs}' "
            f"(CPU-only torch: see the README). ({error})"
        ) from error
    if getattr(encoder, "licence", None) is None:
        try:
            encoder.licence = entry.licence  # type: ignore[attr-defined]
        except AttributeError:
            pass
    message = licence_of(encoder, entry).warning(entry.name)
    if message:
        warnings.warn(message, LicenceWarning, stacklevel=2)
    return encoder


def absolute_spec(spec: str) -> str:
    """``spec`` with a folder argument made absolute, so that later commands run elsewhere
    (``medsort name``, ``label``) build the same encoder from run.json."""
    name, sep, argument = spec.partition(":")
    if argument:
        path = Path(argument).expanduser()
        if path.exists():
            return f"{name}{sep}{path.resolve()}"
    return spec


def licence_of(encoder: object, entry: EncoderEntry | None = None) -> Licence:
    """The licence of a built encoder: its own ``licence``, else its entry's, else unknown."""
    own = getattr(encoder, "licence", None)
    if isinstance(own, Licence):
        return own
    return entry.licence if entry is not None else UNKNOWN_LICENCE


def describe_encoder(encoder: object, spec: str | None = None) -> dict[str, Any]:
    """What run.json records about an encoder: registry name, licence, modality."""
    entry = None
    if spec:
        try:
            entry = get_entry(spec)
        except ValueError:
            entry = None
    licence = licence_of(encoder, entry)
    return {
        "entry": entry.name if entry else None,
        "modality": entry.modality if entry else None,
        **licence.as_dict(),
        "warning": licence.warning(entry.name if entry else str(getattr(encoder, "name", "?"))),
    }
