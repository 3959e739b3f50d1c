"""Refining the default partition, and a 448 px CNN view, on the real dev sets (issue 12).

Same cached features and cases as ``bench_views.py`` (labels only score). Per modality group of
the default grouper, each method starts from the default's ``k`` groups and the space they were
formed in (CNN PCA block plus the voted view weighting, "joined"), and relabels the rows:

- kNN-graph smoothing: label spreading of the partition (Zhou et al. 2004) and repeated
  majority votes of each row's 15 nearest neighbours (joined space or spectral coordinates);
- SCAN (Van Gansbeke et al., ECCV 2020) on the frozen features: a linear head trained on the
  kNN-consistency loss minus ``lam`` x the entropy of its mean prediction, started from the
  default labels or from random weights (5 heads, the lowest loss kept), then SCAN's
  self-labelling step (confident rows, > 0.99, retrain with class-balanced cross-entropy);
- the self-labelling step alone on the default partition (SCAN's, and a logistic regression);
- TEMI (Adaloglou et al., BMVC 2023): 5 linear student heads with EMA teachers on the weighted
  pointwise mutual information between each row and a kNN neighbour (beta 0.6), the head with
  the lowest loss kept.

``--cnn448`` instead compares the 448 px encoder (``efficientnet_lite0_448``) in place of the
224 px one and as one more view in the vote.

    python benchmarks/bench_heads.py [--cache-dir scratch/bench-cache] [--cnn448]

Figures: docs/benchmarks.md, "Tried for issue 12 and dropped".
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_turtle import row  # noqa: E402
from bench_views import SETS, cases, load_set  # noqa: E402

from medsort.embed.cache import EmbeddingCache  # noqa: E402
from medsort.embed.registry import create_encoder  # noqa: E402
from medsort.group import TwoLevelGrouper  # noqa: E402
from medsort.group.multiview import mean_row_norm, weighted_blocks  # noqa: E402

CASES = [
    "chest-xray-28 --k 2",
    "lung-histology",
    "mixed chest-xray-28 + lung-histology",
    "blood-cells-128",
    "breast-ultrasound-28 --k 2",
    "brain-mri --k 2",
    "dermoscopy",
    "blood-cells 3-class imbalanced",
]


class RecordingGrouper(TwoLevelGrouper):
    """The default grouper, keeping per modality group the chosen space, labels and eigenmaps."""

    def _with_views(self, model, Zm, rows, fit_rows):
        chosen = super()._with_views(model, Zm, rows, fit_rows)
        fitted = self.view_models_[-1]
        if fitted is None:
            space = Zm / mean_row_norm(Zm)
        else:
            scale, blocks, weights = fitted
            views = {name: array[rows] for name, array in self._views.items()}
            space = weighted_blocks(Zm / scale, blocks.blocks(blocks.transform(views)), weights)
        spectral = chosen.spectral_coords_[:, : max(chosen.n_clusters_, 2)]
        self.recorded_.append(
            {
                "rows": rows,
                "space": space,
                "spectral": spectral / np.linalg.norm(spectral, axis=1, keepdims=True),
                "labels": chosen.labels_.copy(),
                "k": chosen.n_clusters_,
            }
        )
        return chosen

    def fit(self, X, y=None, views=None, reference=None):
        self.recorded_ = []
        return super().fit(X, views=views, reference=reference)


def neighbours(Z: np.ndarray, n: int = 15) -> np.ndarray:
    """Indices of each row's ``n`` nearest other rows."""
    return NearestNeighbors(n_neighbors=n + 1).fit(Z).kneighbors(Z)[1][:, 1:]


def centred(Z: np.ndarray) -> np.ndarray:
    """Centred, unit mean row norm."""
    Z = Z - Z.mean(axis=0)
    return Z / np.sqrt((Z**2).sum(axis=1).mean())


def spread(Z: np.ndarray, labels: np.ndarray, k: int, alpha: float, steps: int) -> np.ndarray:
    """Label spreading of the partition on the symmetric 15-NN graph."""
    idx = neighbours(Z)
    n = len(Z)
    A = sp.csr_matrix((np.ones(idx.size), (np.repeat(np.arange(n), idx.shape[1]), idx.ravel())))
    A = A.maximum(A.T)
    inv = sp.diags(1 / np.sqrt(np.asarray(A.sum(axis=1)).ravel()))
    S = inv @ A @ inv
    F0 = np.eye(k)[labels]
    F = F0.copy()
    for _ in range(steps):
        F = alpha * (S @ F) + (1 - alpha) * F0
    return F.argmax(axis=1)


def vote(Z: np.ndarray, labels: np.ndarray, k: int, steps: int) -> np.ndarray:
    """Majority of each row and its 15 nearest neighbours, ``steps`` times."""
    idx = np.hstack([np.arange(len(Z))[:, None], neighbours(Z)])
    out = labels.copy()
    for _ in range(steps):
        counts = np.zeros((len(out), k))
        for j in range(idx.shape[1]):
            np.add.at(counts, (np.arange(len(out)), out[idx[:, j]]), 1)
        out = counts.argmax(axis=1)
    return out


def scan_head(
    Z: np.ndarray,
    labels: np.ndarray,
    k: int,
    lam: float = 5.0,
    from_default: bool = True,
    steps: int = 300,
    self_label: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """SCAN on frozen features (linear head, full batch, Gaussian feature noise as the
    augmentation); returns labels and the final SCAN loss."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.tensor(centred(Z), dtype=torch.float32)
    idx = torch.tensor(neighbours(Z))
    head = torch.nn.Linear(X.shape[1], k)
    torch.nn.init.normal_(head.weight, std=0.01, generator=gen)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)

    def noisy() -> torch.Tensor:
        return X + 0.1 * torch.randn(X.shape, generator=gen)

    def loss_of(P: torch.Tensor, j: int) -> torch.Tensor:
        consistency = -torch.log((P * P[idx[:, j]]).sum(dim=1).clamp_min(1e-8)).mean()
        mean = P.mean(dim=0)
        return consistency + lam * (mean * torch.log(mean.clamp_min(1e-8))).sum()

    def step(loss: torch.Tensor) -> None:
        opt.zero_grad()
        loss.backward()
        opt.step()

    if from_default:
        target = torch.tensor(labels)
        for _ in range(100):
            step(torch.nn.functional.cross_entropy(head(noisy()), target))
    for _ in range(steps):
        j = int(torch.randint(0, idx.shape[1], (1,), generator=gen))
        step(loss_of(torch.softmax(head(noisy()), dim=1), j))
    for _ in range(100 if self_label else 0):
        with torch.no_grad():
            confidence, target = torch.softmax(head(X), dim=1).max(dim=1)
        keep = confidence > 0.99
        if keep.sum() < 10:
            break
        weight = 1.0 / torch.bincount(target[keep], minlength=k).clamp_min(1).float()
        logits = head(noisy())[keep]
        step(
            torch.nn.functional.cross_entropy(
                logits, target[keep], weight=weight * k / weight.sum()
            )
        )
    with torch.no_grad():
        P = torch.softmax(head(X), dim=1)
        loss = float(np.mean([loss_of(P, j).item() for j in range(idx.shape[1])]))
    return P.argmax(dim=1).numpy(), loss


def self_label_lr(Z: np.ndarray, labels: np.ndarray, k: int, confidence: float) -> np.ndarray:
    """Logistic regression on the default partition, refitted 3 times on the rows it predicts
    their own group for with more than ``confidence``."""
    X = centred(Z)
    out = labels.copy()
    model = LogisticRegression(max_iter=500, class_weight="balanced").fit(X, out)
    for _ in range(3):
        P = model.predict_proba(X)
        keep = (P.max(axis=1) > confidence) & (P.argmax(axis=1) == out)
        if len(np.unique(out[keep])) < k:
            break
        model = LogisticRegression(max_iter=500, class_weight="balanced").fit(X[keep], out[keep])
        out = model.predict(X)
    return out


def temi(
    Z: np.ndarray, labels: np.ndarray, k: int, from_default: bool, heads: int = 5, beta: float = 0.6
) -> np.ndarray:
    """TEMI heads on frozen features; the head with the lowest final loss is kept."""
    gen = torch.Generator().manual_seed(0)
    X = torch.tensor(centred(Z), dtype=torch.float32)
    idx = torch.tensor(neighbours(Z))

    def loss_of(Ps, Pt, Pn, prior):
        weight = ((Pt * Pn) ** beta).sum(dim=1).detach()
        pmi = torch.log((((Ps * Pn) ** beta) / prior**beta).sum(dim=1).clamp_min(1e-8))
        return -(weight * pmi).mean() / beta

    results = []
    for _ in range(heads):
        student = torch.nn.Linear(X.shape[1], k)
        torch.nn.init.normal_(student.weight, std=0.01, generator=gen)
        torch.nn.init.zeros_(student.bias)
        opt = torch.optim.Adam(student.parameters(), lr=1e-2)
        for _ in range(100 if from_default else 0):
            opt.zero_grad()
            noisy = X + 0.1 * torch.randn(X.shape, generator=gen)
            torch.nn.functional.cross_entropy(student(noisy), torch.tensor(labels)).backward()
            opt.step()
        teacher = torch.nn.Linear(X.shape[1], k)
        teacher.load_state_dict(student.state_dict())
        prior = torch.full((k,), 1.0 / k)
        for _ in range(300):
            j = int(torch.randint(0, idx.shape[1], (1,), generator=gen))
            noisy = X + 0.1 * torch.randn(X.shape, generator=gen)
            Ps = torch.softmax(student(noisy) / 0.1, dim=1)
            with torch.no_grad():
                Pt = torch.softmax(teacher(X) / 0.04, dim=1)
                prior = 0.9 * prior + 0.1 * Pt.mean(dim=0)
            Pn = Pt[idx[:, j]]
            loss = 0.5 * (loss_of(Ps, Pt, Pn, prior) + loss_of(Ps[idx[:, j]], Pn, Pt, prior))
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
                    t.mul_(0.99).add_(0.01 * s)
        with torch.no_grad():
            Pt = torch.softmax(teacher(X) / 0.04, dim=1)
            Ps = torch.softmax(student(X) / 0.1, dim=1)
            final = np.mean([loss_of(Ps, Pt, Pt[idx[:, j]], prior).item() for j in range(15)])
        results.append((float(final), Pt.argmax(dim=1).numpy()))
    return min(results, key=lambda r: r[0])[1]


def best_of_random_scan(r: dict) -> np.ndarray:
    runs = [
        scan_head(r["space"], r["labels"], r["k"], from_default=False, seed=s) for s in range(5)
    ]
    return min(runs, key=lambda run: run[1])[0]


METHODS: dict[str, Callable[[dict], np.ndarray]] = {
    "spreading alpha 0.8, joined": lambda r: spread(r["space"], r["labels"], r["k"], 0.8, 10),
    "spreading alpha 0.99, joined": lambda r: spread(r["space"], r["labels"], r["k"], 0.99, 20),
    "kNN vote x1, joined": lambda r: vote(r["space"], r["labels"], r["k"], 1),
    "kNN vote x3, joined": lambda r: vote(r["space"], r["labels"], r["k"], 3),
    "kNN vote x3, spectral": lambda r: vote(r["spectral"], r["labels"], r["k"], 3),
    "SCAN from default, lam 5": lambda r: scan_head(r["space"], r["labels"], r["k"])[0],
    "SCAN from default, lam 5, no SL": lambda r: scan_head(
        r["space"], r["labels"], r["k"], self_label=False
    )[0],
    "SCAN from default, lam 1": lambda r: scan_head(r["space"], r["labels"], r["k"], 1.0)[0],
    "SCAN 5 random heads, min loss": best_of_random_scan,
    "SCAN self-labelling only": lambda r: scan_head(r["space"], r["labels"], r["k"], steps=0)[0],
    "self-labelling LR, conf 0.9": lambda r: self_label_lr(r["space"], r["labels"], r["k"], 0.9),
    "self-labelling LR, conf 0.99": lambda r: self_label_lr(r["space"], r["labels"], r["k"], 0.99),
    "TEMI 5 heads from default": lambda r: temi(r["space"], r["labels"], r["k"], True),
    "TEMI 5 random heads": lambda r: temi(r["space"], r["labels"], r["k"], False),
}


def refined(grouper: RecordingGrouper, method: Callable[[dict], np.ndarray]) -> np.ndarray:
    """Flat labels with every modality group of two or more groups relabelled by ``method``."""
    out = grouper.labels_.copy()
    for r, offset in zip(grouper.recorded_, grouper.group_offsets_, strict=True):
        if r["k"] >= 2:
            out[r["rows"]] = method(r) + offset
    return out


def run_refinements(all_cases: dict, methods: list[str]) -> None:
    for case in CASES:
        data, k = all_cases[case]
        grouper = RecordingGrouper(n_clusters=k, random_state=0)
        grouper.fit(data["X"], views=data["views"])
        row(case, "default", grouper.labels_, data["y"])
        for name in methods:
            started = time.process_time()
            labels = refined(grouper, METHODS[name])
            row(case, name, labels, data["y"], f"cpu_s={time.process_time() - started:.2f}")


def run_cnn448(cases224: dict, cases448: dict) -> None:
    for case in CASES:
        (data, k), (data448, _) = cases224[case], cases448[case]
        for method, X, views in (
            ("default (224 px)", data["X"], data["views"]),
            ("448 px instead of 224", data448["X"], data448["views"]),
            ("224 px + 448 px as a view", data["X"], {**data["views"], "cnn448": data448["X"]}),
            ("448 px + 224 px as a view", data448["X"], {**data["views"], "cnn224": data["X"]}),
        ):
            grouper = TwoLevelGrouper(n_clusters=k, random_state=0).fit(X, views=views)
            chosen = [used["weights"] for used in grouper.views_used_]
            row(case, method, grouper.labels_, data["y"], f"chosen={chosen}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("scratch/bench-cache"))
    parser.add_argument("--cnn448", action="store_true", help="the 448 px encoder comparison")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    cache = EmbeddingCache(args.cache_dir)
    encoder = create_encoder("efficientnet_lite0")
    cases224 = cases({name: load_set(name, cache, encoder) for name in SETS})
    if not args.cnn448:
        run_refinements(cases224, args.methods)
        return
    torch.set_num_threads(2)
    encoder448 = create_encoder("efficientnet_lite0_448")
    started = time.process_time()
    cases448 = cases({name: load_set(name, cache, encoder448) for name in SETS})
    print(f"448 px embedding (or cache read): {time.process_time() - started:.1f} CPU s")
    run_cnn448(cases224, cases448)


if __name__ == "__main__":
    main()
