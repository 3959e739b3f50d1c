"""Where the embed stage runs: :class:`LocalBackend` (this process) or :class:`RayBackend`.

Both take the same call, so :class:`~medsort.sorter.Sorter` ``backend=`` is one object
whose parameters ``get_params`` reaches (``backend__num_workers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sklearn.base import BaseEstimator

from medsort.embed.cache import EmbeddingCache
from medsort.embed.registry import Encoder
from medsort.embed.stream import Embedded, embed_files
from medsort.io.readers import ReadOptions
from medsort.io.thumbnails import ThumbnailWriter


class LocalBackend(BaseEstimator):
    """Embed in this process: decoding threads feed the encoder's batches
    (:func:`~medsort.embed.stream.embed_files`)."""

    def embed(
        self,
        files: Sequence[Path],
        encoder: Encoder,
        encoder_spec: str | Encoder,
        cache: EmbeddingCache,
        options: ReadOptions,
        batch_size: int = 32,
        progress: bool = True,
        views: bool = True,
        thumbnails: ThumbnailWriter | None = None,
    ) -> Embedded:
        """Embed ``files`` with ``encoder`` (``encoder_spec`` is what it was built from);
        the decoding threads write ``thumbnails`` too."""
        del encoder_spec
        return embed_files(
            files,
            encoder,
            cache,
            options=options,
            batch_size=batch_size,
            progress=progress,
            views=views,
            thumbnails=thumbnails,
        )


class RayBackend(BaseEstimator):
    """Embed with a pool of Ray encoder actors (needs ``medsort[ray]``; see
    ``docs/scaling.md``).

    Parameters
    ----------
    address : str or None
        Ray cluster to join (``"auto"``, ``"ray://head:10001"``); ``None`` starts a local one.
    num_workers : int or None
        Ray encoder actors; ``None`` picks one per 4 CPUs of the cluster.
    """

    def __init__(self, address: str | None = None, num_workers: int | None = None) -> None:
        self.address = address
        self.num_workers = num_workers

    def embed(
        self,
        files: Sequence[Path],
        encoder: Encoder,
        encoder_spec: str | Encoder,
        cache: EmbeddingCache,
        options: ReadOptions,
        batch_size: int = 32,
        progress: bool = True,
        views: bool = True,
        thumbnails: ThumbnailWriter | None = None,
    ) -> Embedded:
        """Embed ``files`` on the actors, each building the encoder from ``encoder_spec``
        (a registered name); results are staged next to the cache (``ray-shards/``).
        ``thumbnails`` are left to the report (the actors may run on other machines)."""
        from medsort.embed.ray_backend import embed_files_ray

        del views, thumbnails  # the actors always compute the views, as before
        if not isinstance(encoder_spec, str):
            raise ValueError(
                "The Ray backend needs the encoder as a registered name, e.g. "
                "'efficientnet_lite0', so each worker can build it."
            )
        return embed_files_ray(
            files,
            encoder_spec,
            cache,
            options=options,
            batch_size=batch_size,
            num_workers=self.num_workers,
            address=self.address,
            progress=progress,
            encoder_name=encoder.name,
            shards_dir=None if cache.path is None else cache.path.parent / "ray-shards",
        )
