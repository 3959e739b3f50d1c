"""The :class:`Sorter`: read → preprocess → embed (cached) → group, in one estimator."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from medsort import __version__
from medsort.embed.backends import LocalBackend, RayBackend
from medsort.embed.cache import (
    CacheSpec,
    EmbeddingCache,
    default_cache_dir,
    keep_mask,
    open_cache,
)
from medsort.embed.registry import Encoder, absolute_spec, create_encoder, describe_encoder
from medsort.embed.stream import Embedded, decode_options
from medsort.group import TwoLevelGrouper
from medsort.group.memoised import fit_memoised
from medsort.io.outputs import escape_text
from medsort.io.readers import ReadOptions
from medsort.io.scan import relative_key, scan_folder
from medsort.io.thumbnails import THUMB_DIR, ThumbnailWriter
from medsort.memo import Memo
from medsort.modality_encoders import (
    PerModalityGrouper,
    adapted_config,
    adapted_on_grey,
    adapted_reference,
    parse_encoder_for,
)
from medsort.results import ASSIGNMENT_COLUMNS, FILE_HASH, RunInfo, SortResult, skipped_table


class NoReadableImageError(ValueError):
    """A folder without a single usable image; ``skipped`` says why each file was not."""

    def __init__(self, message: str, skipped: pd.DataFrame) -> None:
        super().__init__(message)
        self.skipped = skipped


class Sorter(BaseEstimator):
    """Sort a folder of medical images into modality groups, then condition groups.

    A scikit-learn estimator: ``get_params`` reaches the grouper's and the backend's
    parameters (``grouper__n_clusters``, ``backend__num_workers``) and ``clone`` works.

    Parameters
    ----------
    encoder : str or Encoder
        A registered encoder name (see ``medsort models list``) or an encoder object.
    grouper : TwoLevelGrouper or None
        The grouping model (cloned, then fitted); ``None`` is ``TwoLevelGrouper()``: the
        number of groups chosen automatically on two levels (modality, then condition).
        ``TwoLevelGrouper(n_clusters=k)`` gives exactly ``k`` flat groups; its
        ``random_state`` seeds every random step of the grouping, so runs are repeatable.
    backend : LocalBackend, RayBackend or None
        Where the embedding runs: ``None`` is :class:`~medsort.embed.backends.LocalBackend`
        (this process); :class:`~medsort.embed.backends.RayBackend` uses a pool of Ray
        encoder actors (needs ``medsort[ray]`` and a registered encoder name as ``encoder``).
    cache : None, False, Path or EmbeddingCache
        Embedding cache: ``None`` the default folder (``$MEDSORT_CACHE_DIR`` or
        ``~/.cache/medsort``), ``False`` none, a folder, or an open
        :class:`~medsort.embed.cache.EmbeddingCache` (left open). Its folder also keeps
        the grouping of these exact vectors and parameters (:mod:`medsort.memo`), so a
        re-run of the same folder fits nothing again; ``False`` keeps none.
    read_options : ReadOptions, optional
        Windowing, frame, slice and tiling choices for the readers.
    batch_size : int
        Images per model call.
    n_representatives : int
        How many of the most typical items of each group are marked ``representative``.
    drop_duplicates : bool
        Leave byte-identical copies of a file out of the grouping; they are listed in
        ``skipped.csv`` as duplicates of the copy that was kept.
    device : {"auto", "cpu", "cuda"}
        Where a registered encoder runs: ``"auto"`` uses a GPU where its runtime offers
        one (``onnxruntime-gpu``, CUDA torch), else the CPU. Ignored for encoder objects.
    views : bool
        Compute hand-crafted colour and texture views next to the encoder's vectors and
        weigh them into the condition groups (see :class:`~medsort.group.TwoLevelGrouper`).
    progress : bool
        Show progress bars (and, in :func:`~medsort.pipeline.sort_folder`, messages).
    encoder_for : dict, str or None
        Modality group (index or name) → encoder spec, e.g. ``"xray=rad-dino,1=phikon"``:
        those modality groups are embedded again with their encoder (locally, through the
        same cache) and their condition groups formed from it
        (:mod:`medsort.modality_encoders`; ``predict`` is then not available).
    reference_encoder : str or None
        Encoder whose features choose the modality groups and how many condition groups
        each gets (``reference`` of :meth:`TwoLevelGrouper.fit`), the groups themselves
        being formed in ``encoder``'s features. ``"auto"``: the ImageNet
        EfficientNet-Lite0 when ``encoder`` is one adapted on a folder (``adapted:DIR``,
        :mod:`medsort.adapt`), none otherwise; for an encoder adapted on mostly grey
        images, ``"auto"`` forms the groups in the reference features altogether (the
        adapted vectors stay the embeddings ``medsort label`` learns from). Only the
        grey case uses it with a given ``n_clusters``.
    thumbnails : bool
        Let the decoding threads also write the report's thumbnails into ``thumbs/``
        beside the cache (:func:`shared_thumbs`), from the pixels they decoded anyway, so
        the report reads no image again. :func:`~medsort.pipeline.sort_folder`'s default
        sorter and ``medsort sort`` turn it on; no effect without a cache folder or with
        the Ray backend.

    Attributes
    ----------
    result_ : SortResult
        Assignments, item metadata, embeddings and skipped files.
    labels_ : ndarray of shape (n_items,)
        Final group of each item, unique across modality groups.
    modality_labels_ : ndarray of shape (n_items,)
        Modality group of each item.
    encoder_ : Encoder
        The encoder used (built from ``encoder`` when it is a name).
    grouper_ : TwoLevelGrouper
        The fitted grouping model, used by :meth:`predict` (when its groups came from the
        memo, its models are fitted on the same rows at the first prediction).
    n_embedded_files_ : int
        Files embedded by this fit (not taken from the cache).
    timings_ : dict
        Seconds spent in each stage.
    """

    def __init__(
        self,
        encoder: str | Encoder = "efficientnet_lite0",
        grouper: TwoLevelGrouper | None = None,
        backend: LocalBackend | RayBackend | None = None,
        cache: CacheSpec = None,
        read_options: ReadOptions | None = None,
        batch_size: int = 32,
        n_representatives: int = 8,
        drop_duplicates: bool = False,
        device: str = "auto",
        views: bool = True,
        progress: bool = True,
        encoder_for: dict[str, str] | str | None = None,
        reference_encoder: str | None = "auto",
        thumbnails: bool = False,
    ) -> None:
        self.encoder = encoder
        self.grouper = grouper
        self.backend = backend
        self.cache = cache
        self.read_options = read_options
        self.batch_size = batch_size
        self.n_representatives = n_representatives
        self.drop_duplicates = drop_duplicates
        self.device = device
        self.views = views
        self.progress = progress
        self.encoder_for = encoder_for
        self.reference_encoder = reference_encoder
        self.thumbnails = thumbnails

    def fit(self, input_dir: Path | str, exclude: Path | None = None) -> Sorter:
        """Read, embed and group every image under ``input_dir``.

        ``exclude`` is a folder inside ``input_dir`` not to read (e.g. the output folder).
        """
        input_dir = Path(input_dir)
        self.timings_: dict[str, float] = {}
        started = time.perf_counter()
        files = scan_folder(input_dir, exclude=exclude)
        parse_encoder_for(self.encoder_for)  # a bad mapping fails before any embedding
        self.encoder_ = self._make_encoder()
        grouper = TwoLevelGrouper() if self.grouper is None else clone(self.grouper)
        embedded = self._embed(files, thumbnails=self._thumbnail_writer(input_dir))
        if self.drop_duplicates:
            embedded = without_duplicates(embedded, input_dir)
        self.timings_["read+embed"] = time.perf_counter() - started
        if len(embedded.items) == 0:
            raise NoReadableImageError(
                f"No readable image found under {input_dir} ({len(files)} files, "
                f"{len(embedded.skipped)} skipped).",
                skipped_table(
                    [(relative_key(path, input_dir), why) for path, why in embedded.skipped]
                ),
            )
        if grouper.n_clusters is not None and grouper.n_clusters > len(embedded.items):
            raise ValueError(
                f"--k {grouper.n_clusters} needs at least {grouper.n_clusters} images; "
                f"{len(embedded.items)} could be read under {input_dir}."
            )
        started = time.perf_counter()
        if self.progress:
            print(f"grouping {len(embedded.items)} images...", file=sys.stderr, flush=True)
        self.groups_on_reference_ = self._groups_on_reference()
        self.grouper_ = self._fit_grouper(grouper, files, embedded, Memo(cache_folder(self.cache)))
        if self.encoder_for:
            self.grouper_ = PerModalityGrouper(
                self.grouper_, self.encoder_for, self.device, grouper.random_state,
                self.progress, main_encoder=embedded_name(self.encoder),
            ).fit(embedded, self._embed_with)  # fmt: skip
        self.timings_["group"] = time.perf_counter() - started
        self.labels_ = self.grouper_.labels_
        self.modality_labels_ = self.grouper_.modality_labels_
        self.n_embedded_files_ = embedded.n_embedded_files
        self.result_ = self._result(input_dir, embedded)
        return self

    def fit_predict(self, input_dir: Path | str, exclude: Path | None = None) -> np.ndarray:
        return self.fit(input_dir, exclude=exclude).labels_

    def predict(self, paths: Sequence[Path | str]) -> pd.DataFrame:
        """The group of every item of ``paths`` (new images), without refitting.

        Returns
        -------
        pandas.DataFrame
            One row per item of each readable file (a volume or a multi-frame file has
            several) and one per unreadable file, in the order of ``paths``: ``path``,
            ``item``, ``group`` (``-1`` for an unreadable file) and ``reason`` (why it
            could not be read; ``""`` for the others).
        """
        check_is_fitted(self, "grouper_")
        paths = [Path(path) for path in paths]
        embedded = self.embed(paths)
        vectors = embedded.vectors
        if self.groups_on_reference_:
            vectors = self._reference([Path(path) for path in embedded.files], embedded)
        groups = self.grouper_.predict(vectors, views=embedded.views)
        rows = [
            (str(path), entry.item, int(group), "")
            for path, entry, group in zip(embedded.files, embedded.items, groups, strict=True)
        ]
        rows += [(str(path), "", -1, reason) for path, reason in embedded.skipped]
        order = {str(path): position for position, path in reversed(list(enumerate(paths)))}
        rows.sort(key=lambda row: order.get(row[0], len(order)))  # stable: items keep order
        return pd.DataFrame(rows, columns=["path", "item", "group", "reason"])

    def embed(self, paths: Sequence[Path | str]) -> Embedded:
        """Embed files with the fitted encoder, the backend and the cache."""
        check_is_fitted(self, "encoder_")
        return self._embed([Path(path) for path in paths])

    def _make_encoder(self) -> Encoder:
        if isinstance(self.encoder, str):
            return create_encoder(self.encoder, device=self.device)
        return self.encoder

    def _fit_grouper(
        self, grouper: TwoLevelGrouper, files: list[Path], embedded: Embedded, memo: Memo
    ) -> TwoLevelGrouper:
        """Group ``embedded``: in the reference features (grey adapted folders), with the
        reference counting the groups (other adapted folders), or alone."""
        if self.groups_on_reference_:
            reference = self._reference(files, embedded)
            if reference is not None:
                fitted = fit_memoised(grouper, reference, embedded.views, memo)
                for used in fitted.views_used_:
                    used["grouped_on"] = self._reference_spec()
                return fitted
            self.groups_on_reference_ = False
        count = grouper.n_clusters is None and self._reference_spec() is not None
        reference = self._reference(files, embedded) if count else None
        return fit_memoised(grouper, embedded.vectors, embedded.views, memo, reference=reference)

    def _reference_spec(self) -> str | None:
        if self.reference_encoder != "auto":
            return self.reference_encoder
        config = adapted_config(self.encoder)
        return None if config is None else adapted_reference(config)

    def _groups_on_reference(self) -> bool:
        """Whether the groups are formed in the reference features altogether: with
        ``"auto"``, for an encoder adapted on mostly grey images (:func:`adapted_on_grey`)."""
        return self.reference_encoder == "auto" and adapted_on_grey(adapted_config(self.encoder))

    def _reference(self, files: list[Path], embedded: Embedded) -> np.ndarray | None:
        """The reference encoder's vectors of ``embedded``'s rows (None: no reference, or
        it could not read every row the main encoder read)."""
        spec = self._reference_spec()
        if spec is None:
            return None
        other = self._embed_with(files, create_encoder(spec, device=self.device))
        row_of = {key: row for row, key in enumerate(row_keys(other))}
        rows = [row_of.get(key) for key in row_keys(embedded)]
        if any(row is None for row in rows):
            print(
                f"medsort: {spec} could not read every image; groups counted on "
                f"{embedded_name(self.encoder)} alone",
                file=sys.stderr,
            )
            return None
        return other.vectors[np.asarray(rows, dtype=np.int64)]

    def _embed_with(self, files: list[Path], encoder: Encoder) -> Embedded:
        """Embed ``files`` with another ``encoder``, locally, through the same cache."""
        return self._embed(files, encoder)

    def _thumbnail_writer(self, input_dir: Path) -> ThumbnailWriter | None:
        """What writes the report's thumbnails in the read pass (``None``: the report)."""
        folder = shared_thumbs(self.cache)
        if not self.thumbnails or folder is None:
            return None
        root = input_dir.resolve()

        def as_the_report_reads(path: Path) -> Path:  # run.json's input_dir / path
            return root / path.relative_to(input_dir)

        return ThumbnailWriter(folder, self.read_options or ReadOptions(), as_the_report_reads)

    def _embed(
        self,
        files: list[Path],
        encoder: Encoder | None = None,
        thumbnails: ThumbnailWriter | None = None,
    ) -> Embedded:
        """Embed ``files`` with the backend and the fitted encoder, or with ``encoder``
        (then always in this process: a Ray worker could not build it from a name);
        ``thumbnails`` writes the report's thumbnails on the way."""
        backend = LocalBackend() if self.backend is None or encoder is not None else self.backend
        if not hasattr(backend, "embed"):
            raise ValueError(
                f"Unknown backend {backend!r}: use LocalBackend() or RayBackend(...) "
                "from medsort.embed.backends (or None for local)."
            )
        spec = self.encoder if encoder is None else encoder
        encoder = self.encoder_ if encoder is None else encoder
        cache, opened = open_cache(self.cache)
        try:
            return backend.embed(
                files,
                encoder,
                spec,
                cache,
                options=decode_options(self.read_options, encoder),
                batch_size=self.batch_size,
                progress=self.progress,
                views=self.views,
                # Only when asked: a backend of the older call takes no ``thumbnails``.
                **({} if thumbnails is None else {"thumbnails": thumbnails}),
            )
        finally:
            if opened:
                cache.close()

    def _result(self, input_dir: Path, embedded: Embedded) -> SortResult:
        paths = [relative_key(path, input_dir) for path in embedded.files]
        item_ids = [entry.item for entry in embedded.items]
        distances = self.grouper_.distances_
        assignments = pd.DataFrame(
            {
                "path": paths,
                "item": item_ids,
                "modality_group": self.modality_labels_,
                "group": self.labels_,
                "distance": np.round(distances, 6),
                "representative": representatives(self.labels_, distances, self.n_representatives),
                "map_x": np.round(self.grouper_.map_2d_[:, 0], 4),
                "map_y": np.round(self.grouper_.map_2d_[:, 1], 4),
            },
            columns=ASSIGNMENT_COLUMNS,
        )
        items = pd.DataFrame(
            [
                {"path": p, "item": i, **_text_safe(entry.meta)}
                for p, i, entry in zip(paths, item_ids, embedded.items, strict=True)
            ]
        )
        skipped = skipped_table(
            [(relative_key(path, input_dir), reason) for path, reason in embedded.skipped]
        )
        return SortResult(
            assignments=assignments,
            items=items,
            embeddings=embedded.vectors,
            skipped=skipped,
            run=self._run_info(input_dir, embedded),
            signatures={**embedded.signatures, FILE_HASH: np.array(embedded.hashes, dtype="S")},
        )

    def _run_info(self, input_dir: Path, embedded: Embedded) -> RunInfo:
        grouper = getattr(self.grouper_, "base", self.grouper_)  # PerModalityGrouper's base
        spec = self.encoder if isinstance(self.encoder, str) else None
        return RunInfo(
            medsort_version=__version__,
            input_dir=str(input_dir.resolve()),
            encoder=self.encoder_.name,
            encoder_spec=None if spec is None else absolute_spec(spec),
            encoder_licence=describe_encoder(self.encoder_, spec),
            n_clusters=grouper.n_clusters,
            reading=asdict(self.read_options or ReadOptions()),
            n_items=len(embedded.items),
            n_skipped=len(embedded.skipped),
            n_embedded_files=embedded.n_embedded_files,
            n_modality_groups=int(self.modality_labels_.max()) + 1,
            n_groups=int(self.labels_.max()) + 1,
            views_per_modality_group=self.grouper_.views_used_,
            timings_s={stage: round(seconds, 3) for stage, seconds in self.timings_.items()},
            peak_rss_mib=peak_rss_mib(),
            extra=self.grouper_.run_info() if isinstance(self.grouper_, PerModalityGrouper) else {},
        )


def cache_folder(cache: CacheSpec) -> Path | None:
    """The folder of the embedding cache a :data:`~medsort.embed.cache.CacheSpec` names
    (``None`` for none: ``False``, or an open cache kept in memory). What a run keeps
    besides the embeddings lives there too: remembered results (:mod:`medsort.memo`)
    and the report's thumbnails."""
    if isinstance(cache, EmbeddingCache):
        return None if cache.path is None else cache.path.parent
    if cache is False or cache is True:
        return None
    return default_cache_dir() if cache is None else Path(cache)


def row_keys(embedded: Embedded) -> list[tuple[str, str]]:
    """``(file, item)`` of every row."""
    return [
        (str(path), entry.item) for path, entry in zip(embedded.files, embedded.items, strict=True)
    ]


def embedded_name(encoder: str | Encoder) -> str:
    """A spec as given, or an encoder object's name."""
    return encoder if isinstance(encoder, str) else encoder.name


def shared_thumbs(cache: CacheSpec) -> Path | None:
    """``thumbs/`` beside the embedding cache a :data:`~medsort.embed.cache.CacheSpec`
    names (``None`` without a cache folder): the report's thumbnails, shared by every
    output folder."""
    folder = cache_folder(cache)
    return None if folder is None else folder / THUMB_DIR


def _text_safe(meta: dict[str, Any]) -> dict[str, Any]:
    """Metadata with any undecodable text escaped (tables hold valid UTF-8 only)."""
    return {k: escape_text(v) if isinstance(v, str) else v for k, v in meta.items()}


def without_duplicates(embedded: Embedded, input_dir: Path) -> Embedded:
    """Keep the first file of every set of byte-identical copies; list the others as skipped."""
    paths = [str(path) for path in embedded.files]
    keep = keep_mask(embedded.hashes, paths)
    kept_by_hash = {
        h: p for h, p, k in zip(embedded.hashes, embedded.files, keep, strict=True) if k
    }
    dropped = {
        path: f"duplicate of {relative_key(kept_by_hash[h], input_dir)} (--drop-duplicates)"
        for h, path, k in zip(embedded.hashes, embedded.files, keep, strict=True)
        if not k
    }
    rows = np.flatnonzero(keep)
    return Embedded(
        files=[embedded.files[row] for row in rows],
        items=[embedded.items[row] for row in rows],
        hashes=[embedded.hashes[row] for row in rows],
        vectors=embedded.vectors[rows],
        skipped=embedded.skipped + sorted(dropped.items()),
        n_embedded_files=embedded.n_embedded_files,
        views={name: array[rows] for name, array in embedded.views.items()},
        signatures={name: array[rows] for name, array in embedded.signatures.items()},
    )


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process so far, in MiB (``None`` where unknown).

    On Linux this is ``VmHWM`` of the process's own memory map. ``ru_maxrss`` is only the
    fallback: the kernel carries it across ``exec``, so a process started by a large parent
    (pytest after a hundred tests, say) would report the parent's peak as its own.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def representatives(labels: np.ndarray, distances: np.ndarray, per_group: int) -> np.ndarray:
    """Mark the ``per_group`` items closest to their group centre."""
    chosen = np.zeros(len(labels), dtype=bool)
    for group in np.unique(labels):
        members = np.flatnonzero(labels == group)
        chosen[members[np.argsort(distances[members], kind="stable")[:per_group]]] = True
    return chosen
