"""attack="generated" on Fashion-MNIST: sample quality, and the gap of a normal and a shortcut CNN.

Usage (about 10-15 minutes on two shared CPU cores, one torch thread)::

    python benchmarks/bench_generated.py [--work DIR] [--gan-steps 800] [--samples 1000]

What it does, all seeded:

1. The class-conditional generator and the reference classifier train on the 60,000
   clean training images (the plugin's defaults, except ``--gan-steps``).
2. Two CNNs of the same architecture (``benchmarks/fashion.py``), 300 Adam steps of
   batch 128 each: a *normal* one on the clean training images, and a *shortcut* one
   on training images that carry a bright marker pixel whose position depends on the
   class (row 1, column 2 + 2 * class). The shortcut model's evaluation data carries
   the marker too; the generator never saw it.
3. Both are evaluated with ``attack="generated"`` on the first ``--samples`` test
   images (and as many generated samples), threshold 0.10. The gap compares the real
   images the reference judges valid (the same confidence filter the generated samples
   pass) with the accepted generated samples; the table shows the gap on all real
   images too.
4. An *auditor*, a classifier independent of the reference (an MLP, another seed),
   trained on the same clean images, classifies the accepted generated samples: the
   reference accepts by construction only samples it classifies as intended, so the
   auditor's accuracy is the honest measure of how recognisable they are.

Prints a Markdown table and writes ``<work>/generated.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fashion import load_split, small_cnn
from pytest_advrobust.evaluation.run import run_evaluation
from pytest_advrobust.reports.report import build_report
from pytest_advrobust.runtime import Runtime
from pytest_advrobust.settings.robust import RobustSettings

THRESHOLD = 0.10


def with_marker(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` (N, 1, 28, 28) with pixel (1, 2 + 2 * y) set to 1.0."""
    out = x.clone()
    out[torch.arange(x.shape[0]), 0, 1, 2 + 2 * y] = 1.0
    return out


def train(model: torch.nn.Module, x, y, steps: int, seed: int, lr: float = 1e-3):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(x.shape[0], (128,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        pred = torch.cat([model(x[s : s + 500]).argmax(1) for s in range(0, x.shape[0], 500)])
    return float((pred == y).double().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(".bench/generated"))
    ap.add_argument("--gan-steps", type=int, default=800)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--cnn-steps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("test")
    t0 = time.perf_counter()

    torch.manual_seed(0)
    normal = train(small_cnn(), x_train, y_train, args.cnn_steps, seed=0)
    torch.manual_seed(0)
    shortcut = train(small_cnn(), with_marker(x_train, y_train), y_train, args.cnn_steps, seed=0)
    torch.manual_seed(7)
    auditor = train(
        torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
        ),
        x_train,
        y_train,
        1500,
        seed=7,
    )
    print(
        f"models trained in {time.perf_counter() - t0:.0f}s; auditor accuracy on the test "
        f"set {accuracy(auditor, x_test, y_test):.3f}",
        flush=True,
    )

    settings = RobustSettings(
        threshold=THRESHOLD,
        attacks=("generated",),
        n_samples=args.samples,
        gan_steps=args.gan_steps,
    )
    eval_x, eval_y = x_test[: args.samples], y_test[: args.samples]
    rows = {}
    for name, model, data in (
        ("normal CNN", normal, (eval_x, eval_y)),
        ("shortcut CNN (marker pixel)", shortcut, (with_marker(eval_x, eval_y), eval_y)),
    ):
        out = run_evaluation(
            model,
            data,
            settings,
            train_data=(x_train, y_train),
            runtime=Runtime(cache_dir=args.work / "cache", progress=print),
        )
        rep = build_report(name, out)
        rep["auditor_accuracy_accepted"] = accuracy(auditor, out.x_adv, out.y_adv)
        rows[name] = rep
        print(f"{name}: done at {time.perf_counter() - t0:.0f}s", flush=True)

    (args.work / "generated.json").write_text(json.dumps(rows, indent=2, sort_keys=True))
    print(
        "\n| model | real accuracy, all [95% CI] | real accuracy, valid [95% CI] | "
        "generated accuracy, accepted [95% CI] | gap (valid real) | gap (all real) | "
        "verdict at 0.10 |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, r in rows.items():
        g = r["generated"]
        lo, hi = r["adversarial_ci"]
        clo, chi = r["clean_ci"]
        alo, ahi = g["real_accuracy_all"]["ci"]
        print(
            f"| {name} | {g['real_accuracy_all']['value']:.3f} [{alo:.3f}, {ahi:.3f}] | "
            f"{r['clean_accuracy']:.3f} [{clo:.3f}, {chi:.3f}] | "
            f"{r['adversarial_accuracy']:.3f} [{lo:.3f}, {hi:.3f}] | {r['gap']:+.3f} | "
            f"{g['gap_all_real']:+.3f} | {r['verdict']} |"
        )
        print(
            f"  {name}: {g['real_accepted']} of {r['n']} real samples valid "
            f"({g['real_acceptance_rate']['value']:.3f}, CI {g['real_acceptance_rate']['ci']})"
        )
    first = next(iter(rows.values()))
    g, audit = first["generated"], first["auditor_accuracy_accepted"]
    print(
        f"\naccepted {g['accepted']} of {g['drawn']} generated samples "
        f"({g['acceptance_rate']['value']:.3f}, CI {g['acceptance_rate']['ci']}); reference "
        f"accuracy on all generated {g['reference_accuracy']['value']:.3f}, on real "
        f"{g['reference_real_accuracy']['value']:.3f}; auditor accuracy on accepted "
        f"{audit:.3f}; generator {first['training']['mode']}, "
        f"{first['training']['steps']} steps; total {time.perf_counter() - t0:.0f}s"
    )


if __name__ == "__main__":
    main()
