"""Thumbnails of the user's images, read through medsort's readers (io/).

The report shows every image, so :class:`ThumbnailStore` writes one JPEG per item into
``OUT_DIR/thumbs/`` (beside ``report.html``, so relative paths work from ``file://``).
A thumbnail is named by a hash of the file's path, size and modification time, the item
and the read options: rebuilding the report after ``label`` or ``audit`` reads no source
file again, and a changed file or option gets a new thumbnail. With a ``shared`` folder
(``thumbs/`` of the embedding cache, as ``medsort sort`` passes it), thumbnails made for
one output folder are hard-linked (or copied) into the next: a cached re-run into a new
folder decodes no image for its report either, nor does the first report of a cold
``medsort sort``, whose read pass wrote them there from the pixels it decoded
(:class:`medsort.io.thumbnails.ThumbnailWriter`). While a store is
:meth:`~ThumbnailStore.active`, :func:`thumbnails_of` and :func:`thumbnail_uri` answer
from it too, so every report section shares the cached files.
"""

from __future__ import annotations

import base64
import html
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from PIL import Image

from medsort.io.readers import ReadError, ReadOptions, iter_images
from medsort.io.thumbnails import (
    PREVIEW_SIZE,
    THUMB_DIR,
    THUMB_SIZE,
    file_stamp,
    jpeg_bytes,
    place,
    thumbnail_name,
    thumbnail_options,
    write_jpeg,
)

THREADS = 2
"""Files read and written at once when thumbnails are made."""
INDEX = "index.json"
"""``thumbs/index.json``: which thumbnail each ``path``/``item`` got last."""

_ACTIVE: ThumbnailStore | None = None


def thumbnail_uri(path: Path, item: str, options: ReadOptions, size: int = THUMB_SIZE) -> str:
    """A thumbnail ``src`` for one item (a ``data:`` URI), or ``""`` if it cannot be read."""
    return thumbnail_uris(path, {item}, options, size).get(item, "")


def thumbnail_uris(
    path: Path, items: set[str], options: ReadOptions, size: int = THUMB_SIZE
) -> dict[str, str]:
    """Thumbnails of several items of one file, read in a single pass.

    Reading stops once every wanted item is found, so a slide's or multi-frame file's
    representatives cost one partial read, not one read each. Items that cannot be read
    are missing from the result. Items of the active store come from its folder.
    """
    found: dict[str, str] = {}
    if _ACTIVE is not None:
        found = {i: s for i in items if (s := _ACTIVE.src_of(Path(path), i))}
    wanted = set(items) - set(found)
    if wanted:
        for item, image in _read_items(Path(path), wanted, thumbnail_options(options)):
            found[item] = _data_uri(image, size)
    return found


def thumbnails_of(
    rows: pd.DataFrame,
    source_path: Callable[[str], Path],
    options: ReadOptions,
    size: int = THUMB_SIZE,
) -> dict[tuple[str, str], str]:
    """``(path, item) -> src`` for every row (columns ``path``, ``item``), each file
    read once.

    ``source_path`` maps a path as stored in the output folder to the file to read
    (:meth:`medsort.results.SortResult.source_path`). Unreadable items are missing.
    """
    return {
        (path, item): uri
        for path, items in _items_by_path(rows).items()
        for item, uri in thumbnail_uris(source_path(path), items, options, size).items()
    }


class ThumbnailStore:
    """JPEG thumbnails of items in ``OUT_DIR/thumbs/``, made once and reused.

    Parameters
    ----------
    out_dir : Path
        The output folder; thumbnails go to its ``thumbs/`` sub-folder.
    options : ReadOptions
        How the sort read the pixels (window, frames, ...); images are read with them at
        the thumbnails' draft size (:func:`~medsort.io.thumbnails.thumbnail_options`),
        and they are part of every name.
    size : int
        Longest side of a thumbnail in pixels.
    shared : Path, optional
        A folder of thumbnails shared by every output folder (same names): missing ones
        are taken from there, and new ones are put there.
    """

    def __init__(
        self,
        out_dir: Path,
        options: ReadOptions,
        size: int = PREVIEW_SIZE,
        shared: Path | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.options = thumbnail_options(options)
        self.size = size
        self.shared = None if shared is None else Path(shared)
        self.n_shared_ = 0
        self.n_read_ = 0
        self.n_failed_ = 0
        self._src: dict[tuple[str, str], str] = {}
        self._options_token = self.options.cache_token()

    @property
    def folder(self) -> Path:
        return self.out_dir / THUMB_DIR

    def build(
        self,
        rows: pd.DataFrame,
        source_path: Callable[[str], Path],
        progress: bool = False,
    ) -> list[str]:
        """The thumbnail of every row (``path``, ``item``) as a path relative to
        ``out_dir`` (``""`` where the item cannot be read), making the missing ones.

        Thumbnails no row needs any more are deleted.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        made_before = self._load_index()
        names = {}
        for path, item in rows[["path", "item"]].itertuples(index=False):
            # A source that cannot be found now (moved, unmounted) keeps its last thumbnail.
            name = self._name(source_path(path), item)
            names[(path, item)] = name or made_before.get(f"{path}\0{item}", "")
        missing = [
            key for key, name in names.items() if name and not (self.folder / name).is_file()
        ]
        self.n_failed_ += sum(not name for name in names.values())
        missing = [key for key in missing if not self._take_shared(names[key])]
        self._make(missing, source_path, names, progress)
        self._prune(set(names.values()))
        self._save_index(names)
        self._src = {}
        sources = []
        for (path, item), name in names.items():
            src = f"{THUMB_DIR}/{name}" if name and (self.folder / name).is_file() else ""
            self._src[(str(source_path(path)), item)] = src
            sources.append(src)
        by_key = dict(zip(names, sources, strict=True))
        return [by_key[key] for key in rows[["path", "item"]].itertuples(index=False)]

    def src_of(self, source: Path, item: str) -> str:
        """The cached thumbnail of ``item`` of the file ``source``, or ``""``."""
        return self._src.get((str(source), item), "")

    @contextmanager
    def active(self) -> Iterator[ThumbnailStore]:
        """Let :func:`thumbnails_of` and :func:`thumbnail_uri` answer from this store."""
        global _ACTIVE
        previous, _ACTIVE = _ACTIVE, self
        try:
            yield self
        finally:
            _ACTIVE = previous

    def _name(self, source: Path, item: str) -> str:
        """The thumbnail's file name, ``""`` when the source file is not there."""
        return thumbnail_name(source, item, file_stamp(source), self._options_token, self.size)

    def _take_shared(self, name: str) -> bool:
        """Link (or copy) thumbnail ``name`` from the shared folder; whether it was there."""
        if self.shared is None or not (self.shared / name).is_file():
            return False
        try:
            place(self.shared / name, self.folder / name)
        except OSError:
            return False
        self.n_shared_ += 1
        return True

    def _give_shared(self, name: str) -> None:
        if self.shared is None:
            return
        try:
            self.shared.mkdir(parents=True, exist_ok=True)
            place(self.folder / name, self.shared / name)
        except OSError:  # a read-only or full cache costs only the next report's time
            pass

    def _load_index(self) -> dict[str, str]:
        try:
            return dict(json.loads((self.folder / INDEX).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return {}

    def _save_index(self, names: dict[tuple[str, str], str]) -> None:
        index = {f"{path}\0{item}": name for (path, item), name in names.items() if name}
        partial = self.folder / (INDEX + ".part")
        partial.write_text(json.dumps(index), encoding="utf-8")
        os.replace(partial, self.folder / INDEX)

    def _make(
        self,
        keys: list[tuple[str, str]],
        source_path: Callable[[str], Path],
        names: dict[tuple[str, str], str],
        progress: bool,
    ) -> None:
        by_path: dict[str, set[str]] = {}
        for path, item in keys:
            by_path.setdefault(path, set()).add(item)

        def make_file(path: str, items: set[str]) -> int:
            found = 0
            for item, image in _read_items(source_path(path), items, self.options):
                write_jpeg(image, self.size, self.folder / names[(path, item)])
                self._give_shared(names[(path, item)])
                found += 1
            return found

        # Pillow decodes, resizes and encodes without the GIL: files in parallel threads.
        with ThreadPoolExecutor(THREADS) as pool:
            counts = pool.map(make_file, by_path.keys(), by_path.values())
            for n, (found, items) in enumerate(zip(counts, by_path.values(), strict=True), 1):
                self.n_read_ += found
                self.n_failed_ += len(items) - found
                if progress and (n % 500 == 0 or n == len(by_path)):
                    print(f"thumbnails: {n}/{len(by_path)} files", file=sys.stderr, flush=True)

    def _prune(self, keep: set[str]) -> None:
        for path in self.folder.glob("*.jpg"):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def figure(uri: str, path: str, item: str, caption: str = "") -> str:
    """A report ``<figure>``: the thumbnail (or "n/a"), the file and item, a caption.

    The page opens the large view of the image when the figure is clicked.
    """
    label = html.escape(path + (f" [{item}]" if item else ""))
    image = (
        f'<img src="{html.escape(uri)}" alt="{label}" loading="lazy">'
        if uri
        else '<div class="muted">n/a</div>'
    )
    extra = f"<br>{html.escape(caption)}" if caption else ""
    return (
        f'<figure title="{label}" data-path="{html.escape(path)}" data-item="{html.escape(item)}">'
        f"{image}<figcaption>{label}{extra}</figcaption></figure>"
    )


def _items_by_path(rows: pd.DataFrame) -> dict[str, set[str]]:
    items_by_path: dict[str, set[str]] = {}
    for path, item in rows[["path", "item"]].itertuples(index=False):
        items_by_path.setdefault(path, set()).add(item)
    return items_by_path


def _read_items(
    path: Path, items: Iterable[str], options: ReadOptions
) -> Iterator[tuple[str, Image.Image]]:
    """``(item, image)`` for the wanted items of one file, stopping once all are found."""
    wanted = set(items)
    try:
        for image in iter_images(path, options):
            if image.item in wanted:
                wanted.discard(image.item)
                yield image.item, Image.fromarray(image.pixels)
                if not wanted:
                    return
    except (ReadError, OSError):
        return


def _data_uri(image: Image.Image, size: int) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes(image, size)).decode("ascii")
