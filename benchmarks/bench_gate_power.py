"""Benchmark: false alarms and detection power of the regression gate's two rules.

The gate compares a test's evaluation with its baseline entry. Two rules, side by side:

* **paired** (the gate's rule): on the samples both evaluations share, fail when the fall
  of adversarial accuracy exceeds ``--tolerance`` and the one-sided exact test on the
  samples whose verdict flipped finds it real at ``--significance``
  (:func:`pytest_advrobust.gate.comparison.compare` with per-sample records);
* **absolute** (the rule before): fail when the adversarial accuracy fell by more than
  ``--tolerance`` (the same function on entries without per-sample records).

Setting: scikit-learn's 8x8 digits in [0, 1], a seeded split into 1,000 training images
and 797 held-out ones; the plugin's PGD-40, L-inf eps 0.1; the gate evaluates ``--n``
(512) of the held-out images, chosen by the plugin's seeded permutation, exactly as
``pytest --advrobust`` does (``run_evaluation``). One torch thread. Two recipes, both
Adam in batches of 50 from a seeded initialisation and data order:

* **converged**: an MLP 64-256-10, lr 1e-3, 30 epochs (seed-to-seed spread of the robust
  accuracy about 0.6 points);
* **short**: an MLP 64-64-10, lr 3e-3, 15 epochs (spread about 1.2 points).

(a) **False alarms.** For each recipe, ``--models`` (20) models with seeds 1..20, each
    compared with the baseline, the model of seed 0; below each, every ordered pair of the
    21 models (420 comparisons), which does not hang on one baseline.
(b) **Detection.** A commit that fine-tunes the converged baseline for 4 more epochs
    (another data order per instance) lowers its robust accuracy. For each level, the
    fine-tuning learning rate is set (bisection) so that the ``--models`` instances lose on
    average 2, 3 and 5 points on all 797 held-out images; the table gives that fall and
    how often each rule fails the instances.

Usage::

    python benchmarks/bench_gate_power.py          # the table of README, a few minutes
"""

from __future__ import annotations

import argparse
import copy
import itertools
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_advrobust.evaluation.run import run_evaluation  # noqa: E402
from pytest_advrobust.gate.comparison import FAILING, compare  # noqa: E402
from pytest_advrobust.settings.robust import RobustSettings  # noqa: E402

#: name -> (hidden units, epochs, learning rate)
RECIPES = {"converged": (256, 30, 1e-3), "short": (64, 15, 3e-3)}
FINE_TUNE_EPOCHS, BATCH = 4, 50


def digits() -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train x, train y, held-out x, held-out y): a seeded 1,000 / 797 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, ho = order[:1000], order[1000:]
    return x[tr], y[tr], x[ho], y[ho]


def fit(model: torch.nn.Module, x, y, epochs: int, seed: int, lr: float) -> torch.nn.Module:
    """``epochs`` of Adam on (x, y) in batches of :data:`BATCH`, order seeded by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), BATCH):
            batch = order[i : i + BATCH]
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def recipe(data, seed: int, name: str = "converged") -> torch.nn.Module:
    hidden, epochs, lr = RECIPES[name]
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
    )
    return fit(net, data[0], data[1], epochs, seed, lr)


def fine_tuned(base: torch.nn.Module, data, seed: int, lr: float) -> torch.nn.Module:
    return fit(copy.deepcopy(base), data[0], data[1], FINE_TUNE_EPOCHS, 1000 + seed, lr)


class Gate:
    """Evaluates models as the plugin does and judges pairs by both rules."""

    def __init__(self, data, n: int, tolerance: float, significance: float):
        self.held_out = (data[2], data[3])
        self.tolerance, self.significance = tolerance, significance
        common = dict(threshold=1.0, attacks=("pgd",), eps=(0.1,), steps=40, sanity="off")
        self.gate = RobustSettings(n_samples=n, **common)
        self.everything = RobustSettings(n_samples=10**6, **common)
        self.evaluations = 0

    def record(self, model) -> Dict[str, Any]:
        """What the gate records: adversarial accuracy and the per-sample record."""
        out = run_evaluation(model, self.held_out, self.gate)
        self.evaluations += 1
        acc = out.numbers["adversarial_accuracy"]
        return {"nodeid": "bench", "adversarial_accuracy": acc, "samples": out.sample_record()}

    def true_accuracy(self, model) -> float:
        """Adversarial accuracy on all 797 held-out images."""
        self.evaluations += 1
        return run_evaluation(model, self.held_out, self.everything).numbers["adversarial_accuracy"]

    def fails(self, base: Dict[str, Any], new: Dict[str, Any]) -> Tuple[bool, bool, float]:
        """(paired rule fails, absolute rule fails, share of samples that flipped)."""
        paired = compare(base, new, self.tolerance, self.significance)
        plain = {k: v for k, v in base.items() if k != "samples"}
        absolute = compare(plain, dict(new, samples=None), self.tolerance, self.significance)
        assert paired.rule == "paired" and absolute.rule == "absolute"
        p = paired.paired
        flipped = (p["newly_fooled"] + p["newly_robust"]) / p["shared"]
        return paired.status in FAILING, absolute.status in FAILING, flipped


def calibrate(gate: Gate, base, base_true: float, data, target: float, models: int):
    """The fine-tuning learning rate at which the ``models`` instances lose ``target`` on
    average on all 797 held-out images (bisection on log lr), with those instances and
    their falls."""
    lo, hi = 1e-4, 3e-2
    for _ in range(10):
        lr = (lo * hi) ** 0.5
        nets = [fine_tuned(base, data, s, lr) for s in range(1, models + 1)]
        falls = [base_true - gate.true_accuracy(m) for m in nets]
        mean = sum(falls) / len(falls)
        if abs(mean - target) < 0.0005:
            break
        lo, hi = (lr, hi) if mean < target else (lo, lr)
    return lr, nets, falls


def rate(flags: List[bool]) -> str:
    return f"{sum(flags)}/{len(flags)} ({100.0 * sum(flags) / len(flags):.0f}%)"


def row(label: str, change: str, n: int, judged: List[Tuple[bool, bool, float]]) -> str:
    """A table row: the true change, the share of flipped samples, both rules' failures."""
    share = 100.0 * sum(j[2] for j in judged) / len(judged)
    paired, absolute = [j[0] for j in judged], [j[1] for j in judged]
    return f"| {label} | {change} | {n} | {share:.1f}% | {rate(paired)} | {rate(absolute)} |"


def false_alarms(gate: Gate, data, models: int, name: str) -> List[str]:
    nets = [recipe(data, s, name) for s in range(models + 1)]
    recs = [gate.record(m) for m in nets]
    true = [gate.true_accuracy(m) for m in nets]
    judged = [gate.fails(recs[0], r) for r in recs[1:]]
    mean = sum(true[1:]) / models
    spread = (sum((t - mean) ** 2 for t in true[1:]) / (models - 1)) ** 0.5
    hidden, epochs, lr = RECIPES[name]
    what = f"{name} recipe (MLP 64-{hidden}-10, {epochs} epochs, lr {lr:g})"
    print(
        f"{what}: adversarial accuracy of seeds 1-{models} on all 797 held-out images "
        f"{mean:.3f} (sd {spread:.3f}); seed 0 (the baseline) {true[0]:.3f}",
        flush=True,
    )
    pairs = [gate.fails(a, b) for a, b in itertools.permutations(recs, 2)]
    sizes = [abs(a - b) for a, b in itertools.permutations(true, 2)]
    n = gate.gate.n_samples
    return [
        row(
            f"{what}, seeds 1-{models} each against seed 0",
            f"{100 * (mean - true[0]):+.1f}",
            n,
            judged,
        ),
        row(
            f"{what}, every ordered pair of seeds 0-{models}",
            f"±{100 * sum(sizes) / len(sizes):.1f} (mean size)",
            n,
            pairs,
        ),
    ]


def detection(gate: Gate, data, models: int, targets) -> List[str]:
    base = recipe(data, 0)
    base_rec, base_true = gate.record(base), gate.true_accuracy(base)
    rows = []
    for target in targets:
        lr, nets, falls = calibrate(gate, base, base_true, data, target / 100.0, models)
        judged = [gate.fails(base_rec, gate.record(m)) for m in nets]
        fall = sum(falls) / len(falls)
        label = (
            f"converged baseline fine-tuned {FINE_TUNE_EPOCHS} more epochs at lr {lr:.2g}, "
            f"{models} instances"
        )
        rows.append(row(label, f"{-100 * fall:+.1f}", gate.gate.n_samples, judged))
        print(f"fall {target:g} points: lr {lr:.3g}, measured {100 * fall:.2f} points", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=20, help="models per row (default 20)")
    parser.add_argument("--n", type=int, default=512, help="samples the gate evaluates")
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--significance", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = digits()
    gate = Gate(data, args.n, args.tolerance, args.significance)
    rows = false_alarms(gate, data, args.models, "converged")
    rows += false_alarms(gate, data, args.models, "short")
    rows += detection(gate, data, args.models, (2, 3, 5))
    print()
    print(
        f"PGD-40 L-inf eps 0.1 on sklearn digits; tolerance {args.tolerance:g}, "
        f"significance {args.significance:g} (one-sided exact test on the flipped samples)"
    )
    print()
    print(
        "| comparison | true change (points, all 797 held-out images) | n | samples flipped "
        "| paired rule fails | absolute rule fails |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for line in rows:
        print(line)
    print()
    print(f"{gate.evaluations} evaluations, {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
