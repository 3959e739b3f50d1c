"""Read a folder once into a small uint8 array for adaptation (numpy only, no torch)."""

from __future__ import annotations

import hashlib
import itertools
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medsort.adapt.augment import is_grey
from medsort.embed.cache import content_hash
from medsort.io.errors import ReadError
from medsort.io.readers import ReadOptions, iter_images
from medsort.io.scan import relative_key, scan_folder
from medsort.preprocess import PreprocessConfig, to_model_input

ITEMS_PER_FILE = 8
"""At most this many items (frames, slices, tiles) of one file are adapted on."""


@dataclass
class DecodedFolder:
    """A folder's images, decoded once and laid out as the encoder expects.

    Attributes
    ----------
    pixels : np.ndarray
        ``(N, S, S, 3)`` uint8, each image padded to the encoder's square input.
    grey : np.ndarray
        ``(N,)`` bool: which images are grey (they get the grey augmentations).
    paths : list of str
        Each image's file relative to the folder (an item suffix after ``#``).
    fingerprint : str
        Digest of the sorted content hashes of the files read: the same images give the
        same fingerprint wherever they lie and whatever they are called.
    n_files : int
        Files read (a file may give several items).
    skipped : list of (str, str)
        Files that could not be read, with the reason.
    """

    pixels: np.ndarray
    grey: np.ndarray
    paths: list[str]
    fingerprint: str
    n_files: int
    skipped: list[tuple[str, str]] = field(default_factory=list)


def decode_folder(
    input_dir: Path,
    config: PreprocessConfig,
    max_images: int | None = None,
    seed: int = 0,
    options: ReadOptions | None = None,
    quiet: bool = False,
    threads: int = 2,
    exclude: list[Path] | None = None,
    files: list[Path] | None = None,
) -> DecodedFolder:
    """Read every image under ``input_dir`` (never modified) into a :class:`DecodedFolder`.

    Unreadable files are reported on stderr and left out. Above ``max_images`` files a
    fixed random sample (by ``seed``) is read. Files under ``exclude`` folders are not read.
    ``files`` (under ``input_dir``) are read instead of the whole folder: one modality group.
    """
    input_dir = Path(input_dir)
    files = scan_folder(input_dir) if files is None else sorted(Path(path) for path in files)
    for folder in exclude or []:
        folder = Path(folder).resolve()
        files = [path for path in files if not path.resolve().is_relative_to(folder)]
    if max_images is not None and len(files) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(files), max_images, replace=False))
        files = [files[i] for i in keep]
    # Read at the draft size the sort's read pass uses: the inputs it will embed.
    options = (options or ReadOptions()).for_input(config.size)

    def read(path: Path) -> tuple[str, list[np.ndarray], list[str]] | tuple[str, str]:
        try:
            digest = content_hash(path)
            items = list(itertools.islice(iter_images(path, options), ITEMS_PER_FILE))
        except (ReadError, OSError) as error:
            return relative_key(path, input_dir), str(error)
        if not items:
            return relative_key(path, input_dir), "no image found in the file"
        key = relative_key(path, input_dir)
        pixels = [to_model_input(image.rgb(), config) for image in items]
        names = [key + (f"#{image.item}" if image.item else "") for image in items]
        return digest, pixels, names

    pixels: list[np.ndarray] = []
    paths: list[str] = []
    digests: list[str] = []
    skipped: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = pool.map(read, files)
        for result in tqdm(results, total=len(files), desc="reading", unit="file", disable=quiet):
            if len(result) == 2:
                key, reason = result  # type: ignore[misc]
                skipped.append((key, reason))
                if not quiet:
                    tqdm.write(f"medsort adapt: skipped {key}: {reason}", file=sys.stderr)
                continue
            digest, images, names = result  # type: ignore[misc]
            digests.append(digest)
            pixels.extend(images)
            paths.extend(names)
    if not pixels:
        raise ValueError(f"No readable image in {input_dir} to adapt on.")
    stacked = np.stack(pixels)
    fingerprint = hashlib.blake2b("\n".join(sorted(digests)).encode(), digest_size=16)
    return DecodedFolder(
        pixels=stacked,
        grey=np.array([is_grey(image) for image in stacked]),
        paths=paths,
        fingerprint=fingerprint.hexdigest(),
        n_files=len(digests),
        skipped=skipped,
    )
