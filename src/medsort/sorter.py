"""The :class:`Sorter`: read → preprocess → embed (cached) → group, in one estimator."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsort import __version__
from medsort.embed.cache import EmbeddingCache, default_cache_dir, keep_mask
from medsort.embed.registry import Encoder, absolute_spec, create_encoder, describe_encoder
from medsort.embed.stream import Embedded, decode_options, embed_files
from medsort.group import TwoLevelGrouper
from medsort.io.outputs import escape_text
from medsort.io.readers import ReadOptions
from medsort.io.scan import relative_key, scan_folder
from medsort.modality_encoders import PerModalityGrouper, parse_encoder_for
from medsort.results import ASSIGNMENT_COLUMNS, SortResult, skipped_table


class NoReadableImageError(ValueError):
    """A folder without a single usable image; ``skipped`` says why each file was not."""

    def __init__(self, message: str, skipped: pd.DataFrame) -> None:
        super().__init__(message)
        self.skipped = skipped


class Sorter:
    """Sort a folder of medical images into modality groups, then condition groups.

    Parameters
    ----------
    encoder : str or Encoder
        A registered encoder name (see ``medsort models list``) or an encoder object.
    n_clusters : int or None
        ``None`` chooses the number of groups automatically, on two levels (modality, then
        condition). An integer gives exactly that many flat groups.
    read_options : ReadOptions, optional
        Windowing, frame, slice and tiling choices for the readers.
    cache_dir : Path, None or "default"
        Where embeddings are cached; ``None`` disables the cache.
    batch_size : int
        Images per model call.
    n_representatives : int
        How many of the most typical items of each group are marked ``representative``.
    drop_duplicates : bool
        Leave byte-identical copies of a file out of the grouping; they are listed in
        ``skipped.csv`` as duplicates of the copy that was kept.
    random_state : int
        Seed for every random step, so runs are repeatable.
    progress : bool
        Show progress bars.
    backend : {"local", "ray"}
        ``"local"`` embeds in this process; ``"ray"`` uses a pool of Ray encoder actors
        (needs ``medsort[ray]`` and a registered encoder name as ``encoder``).
    ray_address : str or None
        Ray cluster to join (``"auto"``, ``"ray://head:10001"``); ``None`` starts a local one.
    num_workers : int or None
        Ray encoder actors; ``None`` picks one per 4 CPUs of the cluster.
    device : {"auto", "cpu", "cuda"}
        Where a registered encoder runs: ``"auto"`` uses a GPU where its runtime offers
        one (``onnxruntime-gpu``, CUDA torch), else the CPU. Ignored for encoder objects.
    views : bool
        Compute hand-crafted colour and texture views next to the encoder's vectors and
        weigh them into the condition groups (see :class:`~medsort.group.TwoLevelGrouper`).
    encoder_for : dict, str or None
        Modality group (index or name) → encoder spec, e.g. ``"xray=rad-dino,1=phikon"``:
        those modality groups are embedded again with their encoder and their condition
        groups formed from it (:mod:`medsort.modality_encoders`; ``predict`` is then not
        available).

    Attributes
    ----------
    result_ : SortResult
        Assignments, item metadata, embeddings and skipped files.
    labels_ : ndarray of shape (n_items,)
        Final group of each item, unique across modality groups.
    modality_labels_ : ndarray of shape (n_items,)
        Modality group of each item.
    grouper_ : TwoLevelGrouper
        The fitted grouping model, used by :meth:`predict`.
    timings_ : dict
        Seconds spent in each stage.
    """

    def __init__(
        self,
        encoder: str | Encoder = "efficientnet_lite0",
        n_clusters: int | None = None,
        read_options: ReadOptions | None = None,
        cache_dir: Path | str | None = "default",
        batch_size: int = 32,
        n_representatives: int = 8,
        drop_duplicates: bool = False,
        random_state: int = 0,
        progress: bool = True,
        backend: str = "local",
        ray_address: str | None = None,
        num_workers: int | None = None,
        device: str = "auto",
        views: bool = True,
        encoder_for: dict[str, str] | str | None = None,
    ) -> None:
        self.encoder = encoder
        self.n_clusters = n_clusters
        self.read_options = read_options
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.n_representatives = n_representatives
        self.drop_duplicates = drop_duplicates
        self.random_state = random_state
        self.progress = progress
        self.backend = backend
        self.ray_address = ray_address
        self.num_workers = num_workers
        self.device = device
        self.views = views
        self.encoder_for = encoder_for

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
        embedded = self._embed(files)
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
        if self.n_clusters is not None and self.n_clusters > len(embedded.items):
            raise ValueError(
                f"--k {self.n_clusters} needs at least {self.n_clusters} images; "
                f"{len(embedded.items)} could be read under {input_dir}."
            )
        started = time.perf_counter()
        if self.progress:
            print(f"grouping {len(embedded.items)} images...", file=sys.stderr, flush=True)
        self.grouper_ = TwoLevelGrouper(
            n_clusters=self.n_clusters, random_state=self.random_state
        ).fit(embedded.vectors, views=embedded.views)
        if self.encoder_for:
            self.grouper_ = PerModalityGrouper(
                self.grouper_, self.encoder_for, self.device, self.random_state, self.progress
            ).fit(embedded, self._embed_with)
        self.timings_["group"] = time.perf_counter() - started
        self.labels_ = self.grouper_.labels_
        self.modality_labels_ = self.grouper_.modality_labels_
        self.n_embedded_files_ = embedded.n_embedded_files
        self.result_ = self._result(input_dir, embedded)
        return self

    def fit_predict(self, input_dir: Path | str) -> np.ndarray:
        return self.fit(input_dir).labels_

    def predict(self, paths: list[Path]) -> np.ndarray:
        """Final group of every item of ``paths`` (new images), without refitting.

        Unreadable files are left out; see :meth:`embed` for the rows.
        """
        embedded = self.embed(paths)
        return self.grouper_.predict(embedded.vectors, views=embedded.views)

    def embed(self, paths: list[Path]) -> Embedded:
        """Embed files with the fitted encoder and cache."""
        return self._embed([Path(path) for path in paths])

    def _make_encoder(self) -> Encoder:
        if isinstance(self.encoder, str):
            return create_encoder(self.encoder, device=self.device)
        return self.encoder

    def _embed_with(self, files: list[Path], encoder: Encoder) -> Embedded:
        """Embed ``files`` with another ``encoder``, locally, through the same cache."""
        return self._embed(files, encoder)

    def _embed(self, files: list[Path], encoder: Encoder | None = None) -> Embedded:
        if self.cache_dir == "default":
            folder: Path | None = default_cache_dir()
        else:
            folder = None if self.cache_dir is None else Path(self.cache_dir)
        cache = EmbeddingCache(folder)
        try:
            if self.backend not in ("local", "ray"):
                raise ValueError(f"Unknown backend {self.backend!r}: use 'local' or 'ray'.")
            if self.backend == "ray" and encoder is None:
                return self._embed_ray(files, cache, folder)
            encoder = encoder or self.encoder_
            return embed_files(
                files,
                encoder,
                cache,
                options=decode_options(self.read_options, encoder),
                batch_size=self.batch_size,
                progress=self.progress,
                views=self.views,
            )
        finally:
            cache.close()

    def _embed_ray(self, files: list[Path], cache: EmbeddingCache, folder: Path | None) -> Embedded:
        from medsort.embed.ray_backend import embed_files_ray

        if not isinstance(self.encoder, str):
            raise ValueError(
                "backend='ray' needs the encoder as a registered name, e.g. "
                "'efficientnet_lite0', so each worker can build it."
            )
        return embed_files_ray(
            files,
            self.encoder,
            cache,
            options=decode_options(self.read_options, self.encoder_),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            address=self.ray_address,
            progress=self.progress,
            encoder_name=self.encoder_.name,
            shards_dir=None if folder is None else folder / "ray-shards",
        )

    def _result(self, input_dir: Path, embedded: Embedded) -> SortResult:
        paths = [relative_key(path, input_dir) for path in embedded.files]
        item_ids = [entry["item"] for entry in embedded.items]
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
                {"path": p, "item": i, **_text_safe(entry["meta"])}
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
        )

    def _run_info(self, input_dir: Path, embedded: Embedded) -> dict[str, Any]:
        return {
            "medsort_version": __version__,
            "input_dir": str(input_dir.resolve()),
            "encoder": self.encoder_.name,
            "encoder_spec": absolute_spec(self.encoder) if isinstance(self.encoder, str) else None,
            "encoder_licence": describe_encoder(
                self.encoder_, self.encoder if isinstance(self.encoder, str) else None
            ),
            "n_clusters": self.n_clusters,
            "read_options": asdict(self.read_options or ReadOptions()),
            "n_items": len(embedded.items),
            "n_skipped": len(embedded.skipped),
            "n_embedded_files": embedded.n_embedded_files,
            "n_modality_groups": int(self.modality_labels_.max()) + 1,
            "n_groups": int(self.labels_.max()) + 1,
            "views_per_modality_group": self.grouper_.views_used_,
            "timings_s": {stage: round(seconds, 3) for stage, seconds in self.timings_.items()},
            "peak_rss_mib": peak_rss_mib(),
            **(self.grouper_.run_info() if isinstance(self.grouper_, PerModalityGrouper) else {}),
        }


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
    )


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process so far (``None`` where unknown)."""
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
