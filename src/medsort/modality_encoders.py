"""A named encoder per modality group: ``--encoder-for xray=rad-dino,1=phikon``.

The folder is first embedded with the main encoder and split into modality groups as
always. Each modality group named in the mapping is then embedded again, with its own
encoder (any registry spec: ``rad-dino``, ``phikon:DIR``, ``adapted:DIR``), and its condition
groups are formed anew from those vectors (:class:`~medsort.group.TwoLevelGrouper` within
the group, no further modality split). The other modality groups keep their groups.

A key is a modality group's index (``0``, ``1``: as in the report, stable for a folder and
a seed) or its name. Names come from the files: a group where most items are DICOM of one
Modality (``CR``/``DX`` → ``xray``, ``MG`` → ``mammography``, ``CT``, ``MR`` → ``mri``,
``US`` → ``ultrasound``, ``SM`` → ``histology``, ``OP`` → ``fundus``, ...) or whole-slide
tiles (``histology``) is named after it; PNG and JPEG folders carry no modality, so their
groups are named by index only. (Names from reference images or text prompts come from the
name stage, after grouping, and are not used here.)

``embeddings.npy`` keeps the main encoder's vectors (one space for every row, which the
audit, the report's neighbours and ``medsort label`` work in); the per-group vectors are in
the embedding cache under their encoder's name. run.json records, per modality group, the
encoder, its licence and the key that chose it.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medsort.embed.onnx_encoder import ADAPTED_CONFIG
from medsort.embed.registry import Encoder, create_encoder, describe_encoder, get_entry
from medsort.embed.stream import Embedded, EmbeddedItem
from medsort.group import TwoLevelGrouper

DICOM_MODALITY_NAMES = {
    "CR": "xray",
    "DX": "xray",
    "DR": "xray",
    "RG": "xray",
    "PX": "xray",
    "MG": "mammography",
    "CT": "ct",
    "MR": "mri",
    "US": "ultrasound",
    "SM": "histology",
    "OP": "fundus",
    "OPT": "oct",
    "XC": "photo",
    "ES": "endoscopy",
    "NM": "nuclear",
    "PT": "pet",
}
"""DICOM Modality (0008,0060) → the modality name a key may use."""

ADAPTED_PREFIX = "adapted:"
ADAPTED_BASE = "efficientnet_lite0"
"""The encoder ``medsort adapt`` starts from, when an ``adapted.json`` does not say."""


def adapted_config(spec: object) -> dict[str, Any] | None:
    """``adapted.json`` of an ``adapted:DIR`` encoder spec (None for any other)."""
    if not isinstance(spec, str) or not spec.startswith(ADAPTED_PREFIX):
        return None
    return json.loads((Path(spec.removeprefix(ADAPTED_PREFIX)) / ADAPTED_CONFIG).read_text())


def adapted_reference(config: Mapping[str, Any]) -> str:
    """The encoder an adapted one started from: it counts the groups (and forms them, for
    grey images)."""
    return str(config.get("base_encoder", ADAPTED_BASE))


def adapted_on_grey(config: Mapping[str, Any] | None) -> bool:
    """Whether an encoder was adapted on mostly grey images (X-ray, MRI, ultrasound), where
    adapting made every dev set's groups worse (docs/benchmarks.md): its groups are then
    formed in the reference features altogether."""
    trained_on = {} if config is None else config.get("trained_on", {})
    return 2 * int(trained_on.get("n_grey", 0)) > int(trained_on.get("n_images", 0))


EmbedWith = Callable[[list[Path], Encoder], Embedded]
"""Embed files with an encoder (same cache, reader options and views as the main run)."""


def parse_encoder_for(text: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"xray=rad-dino,1=phikon:DIR"`` → ``{"xray": "rad-dino", "1": "phikon:DIR"}``.

    Keys are lower-cased; every encoder must be registered (``ValueError`` otherwise).
    """
    if not text:
        return {}
    if isinstance(text, Mapping):
        pairs = list(text.items())
    else:
        pairs = []
        for part in str(text).split(","):
            key, sep, spec = part.partition("=")
            if not sep or not key.strip() or not spec.strip():
                raise ValueError(
                    f"--encoder-for needs KEY=ENCODER pairs separated by commas, e.g. "
                    f"xray=rad-dino,1=phikon; got {part!r}."
                )
            pairs.append((key, spec))
    mapping: dict[str, str] = {}
    for key, spec in pairs:
        key, spec = str(key).strip().lower(), str(spec).strip()
        if key in mapping:
            raise ValueError(f"--encoder-for names modality group {key!r} twice.")
        get_entry(spec)  # an unknown encoder fails now, before any embedding
        mapping[key] = spec
    return mapping


def item_modality(meta: Mapping[str, Any]) -> str | None:
    """The modality name of one item from its metadata, ``None`` where it says none."""
    code = str(meta.get("modality") or "").upper()
    if code in DICOM_MODALITY_NAMES:
        return DICOM_MODALITY_NAMES[code]
    if str(meta.get("format", "")).startswith("slide"):
        return "histology"
    return None


def modality_group_names(
    items: list[EmbeddedItem], modality_labels: np.ndarray
) -> dict[int, str | None]:
    """Each modality group's name: the modality of more than half of its items, else ``None``."""
    return names_from_meta([item.meta for item in items], modality_labels)


def names_from_meta(
    metas: list[Mapping[str, Any]], modality_labels: np.ndarray
) -> dict[int, str | None]:
    """:func:`modality_group_names` from each row's metadata (``items.csv`` of a sort)."""
    names: dict[int, str | None] = {}
    for group in range(int(modality_labels.max()) + 1):
        rows = np.flatnonzero(modality_labels == group)
        counts = Counter(item_modality(metas[row]) for row in rows)
        name, count = counts.most_common(1)[0]
        names[group] = name if count * 2 > len(rows) else None
    return names


def match_keys(
    mapping: Mapping[str, str], names: Mapping[int, str | None]
) -> tuple[dict[int, tuple[str, str]], list[str]]:
    """Modality group → (key, encoder spec), and a note for each key that matched none.

    An index key wins over a name key for the same group.
    """
    chosen: dict[int, tuple[str, str]] = {}
    notes = []
    for key, spec in mapping.items():
        if key.isdigit():
            groups = [int(key)] if int(key) in names else []
        else:
            groups = [g for g, name in names.items() if name == key]
        if not groups:
            found = ", ".join(f"{g} ({name or 'unnamed'})" for g, name in names.items())
            notes.append(
                f"--encoder-for {key}={spec}: no modality group {key} (found {found}); "
                "name a group by its index when its files carry no modality."
            )
        for group in groups:
            if group not in chosen or key.isdigit():
                chosen[group] = (key, spec)
    return chosen, notes


class PerModalityGrouper:
    """The main grouper's modality groups, some re-grouped with their own encoder.

    Exposes the attributes :class:`~medsort.sorter.Sorter` reads from a fitted
    :class:`~medsort.group.TwoLevelGrouper` (``labels_``, ``modality_labels_``,
    ``distances_``, ``map_2d_``, ``views_used_``, ``n_groups_``, ``n_modalities_``,
    ``group_modality_``).

    Parameters
    ----------
    base : TwoLevelGrouper
        The fitted grouper of the main encoder's vectors.
    encoder_for : dict or str
        Modality group key → encoder spec (see :func:`parse_encoder_for`).
    device : str
        Where the encoders run.
    random_state : int
        Seed for the re-grouping.
    progress : bool
        Say which group is re-embedded with which encoder.
    main_encoder : str or None
        Spec of the main encoder (whose vectors ``fit`` is given): an adapted encoder's
        reference that is the main encoder is not embedded again.

    Attributes
    ----------
    encoders_ : dict of int to dict
        Per re-grouped modality group: key, spec, encoder name, licence, items.
    names_ : dict of int to str or None
        The modality groups' names (from the files' metadata).
    notes_ : list of str
        Keys that matched no modality group.
    groupers_ : dict of int to TwoLevelGrouper
        The grouper of each re-grouped modality group.
    """

    def __init__(
        self,
        base: TwoLevelGrouper,
        encoder_for: Mapping[str, str] | str,
        device: str = "auto",
        random_state: int = 0,
        progress: bool = False,
        main_encoder: str | None = None,
    ) -> None:
        self.base = base
        self.encoder_for = encoder_for
        self.device = device
        self.random_state = random_state
        self.progress = progress
        self.main_encoder = main_encoder

    def fit(self, embedded: Embedded, embed_with: EmbedWith) -> PerModalityGrouper:
        """Re-embed and re-group the chosen modality groups of ``embedded``'s rows."""
        base = self.base
        mapping = parse_encoder_for(self.encoder_for)
        self.modality_labels_ = base.modality_labels_
        self.n_modalities_ = base.n_modalities_
        self.names_ = modality_group_names(embedded.items, self.modality_labels_)
        chosen, self.notes_ = match_keys(mapping, self.names_)
        for note in self.notes_:
            print(f"medsort: warning: {note}", file=sys.stderr, flush=True)
        self.groupers_: dict[int, TwoLevelGrouper] = {}
        self.encoders_: dict[int, dict[str, Any]] = {}
        built: dict[str, Encoder] = {}

        def build(spec: str) -> Encoder:
            if spec not in built:
                built[spec] = create_encoder(spec, device=self.device)
            return built[spec]

        for group, (key, spec) in sorted(chosen.items()):
            rows = np.flatnonzero(self.modality_labels_ == group)
            encoder = build(spec)
            if self.progress:
                print(
                    f"modality group {group}: {len(rows)} images with {spec}...",
                    file=sys.stderr,
                    flush=True,
                )
            info = {
                "key": key,
                "spec": spec,
                "encoder": encoder.name,
                "dim": int(encoder.dim),
                "n_items": len(rows),
                "licence": describe_encoder(encoder, spec),
            }
            grouper = self._regroup(embedded, rows, spec, build, embed_with, info)
            if grouper is not None:
                self.groupers_[group] = grouper
            self.encoders_[group] = info
        self._assemble()
        return self

    def _regroup(
        self,
        embedded: Embedded,
        rows: np.ndarray,
        spec: str,
        build: Callable[[str], Encoder],
        embed_with: EmbedWith,
        info: dict[str, Any],
    ) -> TwoLevelGrouper | None:
        """The condition groups of one modality group's ``rows`` with encoder ``spec``
        (None: the main grouper's groups are kept).

        An encoder adapted on the group (``adapted:DIR``) is used as ``sort --adapt`` uses
        one on a whole folder: its reference encoder (the ImageNet one it started from)
        counts the groups, and for one adapted on mostly grey images the groups are formed
        in the reference features altogether, which for a main encoder that is the reference
        means the main grouper's groups stay.
        """
        views = {name: array[rows] for name, array in embedded.views.items()}
        grouper = TwoLevelGrouper(
            n_clusters=self.base.n_clusters,
            modality_tol=0.0,  # the modality split is the main encoder's
            modality_gap_tol=0.0,
            random_state=self.random_state,
        )
        config = adapted_config(spec)
        if config is None:
            vectors = self._vectors(embedded, rows, build(spec), embed_with)
            return grouper.fit(vectors, views=views)
        reference_spec = adapted_reference(config)
        if reference_spec == self.main_encoder:
            reference = np.asarray(embedded.vectors)[rows]
        else:
            reference = self._vectors(embedded, rows, build(reference_spec), embed_with)
        if adapted_on_grey(config):
            info["grouped_on"] = reference_spec
            if reference_spec == self.main_encoder:
                return None
            return grouper.fit(reference, views=views)
        info["k_from"] = reference_spec
        vectors = self._vectors(embedded, rows, build(spec), embed_with)
        return grouper.fit(vectors, views=views, reference=reference)

    @staticmethod
    def _vectors(
        embedded: Embedded, rows: np.ndarray, encoder: Encoder, embed_with: EmbedWith
    ) -> np.ndarray:
        """``encoder``'s vectors of ``rows``, in their order (their files embedded again)."""
        files = list(dict.fromkeys(embedded.files[row] for row in rows))
        again = embed_with(files, encoder)
        index = {
            (str(path), entry.item): i
            for i, (path, entry) in enumerate(zip(again.files, again.items, strict=True))
        }
        order = []
        for row in rows:
            key = (str(embedded.files[row]), embedded.items[row].item)
            if key not in index:
                reason = dict(again.skipped).get(embedded.files[row], "not read again")
                raise ValueError(
                    f"{embedded.files[row]} could not be embedded with {encoder.name}: {reason}"
                )
            order.append(index[key])
        return again.vectors[np.asarray(order, dtype=np.int64)]

    def _assemble(self) -> None:
        """Flat labels, distances, map and view notes across all modality groups."""
        base = self.base
        n = len(self.modality_labels_)
        self.labels_ = np.zeros(n, dtype=np.int64)
        self.distances_ = np.asarray(base.distances_, dtype=np.float64).copy()
        self.map_2d_ = np.asarray(base.map_2d_, dtype=np.float64).copy()
        self.views_used_ = [dict(used) for used in base.views_used_]
        group_modality: list[int] = []
        offset = 0
        for m in range(self.n_modalities_):
            rows = np.flatnonzero(self.modality_labels_ == m)
            if m in self.groupers_:
                sub = self.groupers_[m]
                labels, k = sub.labels_, sub.n_groups_
                self.distances_[rows] = sub.distances_
                self.map_2d_[rows] = sub.map_2d_ + np.array([8.0 * m, 0.0])
                info = self.encoders_[m]
                self.views_used_[m] = {
                    **sub.views_used_[0],
                    "encoder": info.get("grouped_on", info["encoder"]),
                }
            else:
                labels = base.labels_[rows] - base.group_offsets_[m]
                k = int(np.sum(base.group_modality_ == m))
                if m in self.encoders_:  # an adapted encoder's grey group: groups kept
                    self.views_used_[m]["encoder"] = self.encoders_[m]["grouped_on"]
            self.labels_[rows] = labels + offset
            group_modality += [m] * k
            offset += k
        self.group_modality_ = np.asarray(group_modality, dtype=np.int64)
        self.n_groups_ = offset

    def predict(self, X: np.ndarray, views: dict[str, np.ndarray] | None = None) -> np.ndarray:
        raise NotImplementedError(
            "predict is not available with encoder_for (new images would need each "
            "modality group's encoder); fit on the folder that holds them."
        )

    def run_info(self) -> dict[str, Any]:
        """What run.json records: the names and, per re-grouped modality group, its encoder."""
        return {
            "modality_group_names": {str(g): name for g, name in self.names_.items()},
            "encoder_for": {str(g): info for g, info in self.encoders_.items()},
            "encoder_for_notes": list(self.notes_),
        }
