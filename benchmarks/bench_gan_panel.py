"""Benchmark: the default GAN attack against the plugin's PGD-40 on a panel of models.

Each row: a model, its training split (the generator's training data) and
512 evaluation samples drawn with seed 0 from its test split (the plugin's
default ``n``). Printed and appended as one JSON line per row to ``--out``:

* clean accuracy, PGD-40 and GAN adversarial accuracy (the plugin's ``pgd``
  and ``gan`` attacks, plugin defaults: L-inf eps 0.1 in [0, 1], or the row's
  own norm and eps) and ``gan - pgd`` in points;
* the cold training (empty cache): steps (both stages), seconds, and model
  passes per evaluation sample;
* the model fine-tuned one more epoch, and the warm start from the cold
  generator's cache entry: steps, seconds, GAN and PGD-40 on that model;
* evaluation passes per sample of the trained generator (model forwards);
* for ``--speed`` on a row, the warm-cache generator on the whole test split
  against PGD-40 on it, timed in the same run (the ratio, not absolute time).

Usage (one torch thread; rows can be run one at a time and appended)::

    python benchmarks/bench_gan_panel.py --rows digits_cnn,digits_mlp --out .bench/panel.jsonl
    python benchmarks/bench_gan_panel.py --rows fashion_cnn --speed --out .bench/panel.jsonl
    python benchmarks/bench_gan_panel.py --table .bench/panel.jsonl   # markdown table
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "examples" / "digits"))

from pytest_advrobust.attacks import gan as gan_mod  # noqa: E402
from pytest_advrobust.attacks.base import AttackConfig, AttackContext  # noqa: E402
from pytest_advrobust.attacks.gradient import pgd  # noqa: E402

N_EVAL = 512


# ----------------------------------------------------------------------------- data and models
def _digits():
    from model import load_splits

    return load_splits()


def _fit(model, x, y, epochs, lr=2e-3, seed=0, adv_eps=0.0, batch=64, bounds=(0.0, 1.0)):
    """Adam training; ``adv_eps > 0``: FGSM with a random start (Wong et al., 2020) per batch."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for s in range(0, perm.numel(), batch):
            xb, yb = x[perm[s : s + batch]], y[perm[s : s + batch]]
            if adv_eps > 0:
                d = (torch.rand(xb.shape, generator=g) * 2 - 1) * adv_eps
                d.requires_grad_(True)
                loss = F.cross_entropy(model((xb + d).clamp(*bounds)), yb)
                (grad,) = torch.autograd.grad(loss, d)
                d = (d + 1.25 * adv_eps * grad.sign()).clamp(-adv_eps, adv_eps).detach()
                xb = (xb + d).clamp(*bounds)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _cached(work: Path, name: str, build, train):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = build()
    path = work / f"panel_{name}.safetensors"
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    train(model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model.eval()


def row_digits_cnn(work):
    from model import get_model

    (xtr, ytr), te = _digits()
    return get_model("fragile", (xtr, ytr)), (xtr, ytr), te, {}


def row_digits_robust(work):
    from model import get_model

    (xtr, ytr), te = _digits()
    return get_model("robust", (xtr, ytr)), (xtr, ytr), te, {}


def row_digits_mlp(work):
    (xtr, ytr), (xte, yte) = _digits()
    flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
    build = lambda: nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))  # noqa: E731
    m = _cached(work, "digits_mlp", build, lambda m: _fit(m, flat(xtr), ytr, 30))
    return m, (flat(xtr), ytr), (flat(xte), yte), {}


def row_digits_bn(work):
    (xtr, ytr), te = _digits()

    def build():
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(512, 10),
        )

    return _cached(work, "digits_bn", build, lambda m: _fit(m, xtr, ytr, 15)), (xtr, ytr), te, {}


def row_tabular_l2(work):
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=3000, n_features=20, n_informative=12, n_classes=4, random_state=0
    )
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    x = (x - x[:2000].mean(0)) / x[:2000].std(0)  # standardised with the training statistics

    def build():
        return nn.Sequential(
            nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)
        )

    m = _cached(work, "tabular", build, lambda m: _fit(m, x[:2000], y[:2000], 40, lr=1e-3))
    return m, (x[:2000], y[:2000]), (x[2000:], y[2000:]), {"norm": "l2", "eps": 0.5, "bounds": None}


def row_digits_avgpool(work):
    """Not used to choose any setting: another architecture, seed and schedule."""
    (xtr, ytr), te = _digits()

    def build():
        return nn.Sequential(
            nn.Conv2d(1, 24, 3),
            nn.Tanh(),
            nn.Conv2d(24, 24, 3),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(96, 10),
        )

    m = _cached(work, "digits_avgpool", build, lambda m: _fit(m, xtr, ytr, 25, lr=1e-3, seed=3))
    return m, (xtr, ytr), te, {}


def row_tabular_linf(work):
    """Not used to choose any setting: other data, classes, width and norm."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=3000, n_features=30, n_informative=10, n_classes=5, random_state=7
    )
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    x = (x - x[:2000].mean(0)) / x[:2000].std(0)

    def build():
        return nn.Sequential(nn.Linear(30, 128), nn.ReLU(), nn.Linear(128, 5))

    m = _cached(work, "tabular_linf", build, lambda m: _fit(m, x[:2000], y[:2000], 30, seed=5))
    return m, (x[:2000], y[:2000]), (x[2000:], y[2000:]), {"eps": 0.1, "bounds": None}


def _fashion():
    from fashion import load_split

    return load_split("train"), load_split("test")


def row_fashion_cnn(work):
    from fashion import trained_cnn

    tr, te = _fashion()
    return trained_cnn(*tr, work_dir=work), tr, te, {}


def row_fashion_adv(work):
    from fashion import small_cnn

    tr, te = _fashion()
    m = _cached(
        work,
        "fashion_adv",
        small_cnn,
        lambda m: _fit(m, tr[0][:20000], tr[1][:20000], 2, lr=1e-3, adv_eps=0.1, batch=128),
    )
    return m, tr, te, {}


ROWS = {
    "digits_cnn": row_digits_cnn,
    "digits_mlp": row_digits_mlp,
    "digits_robust": row_digits_robust,
    "digits_bn": row_digits_bn,
    "tabular_l2": row_tabular_l2,
    "digits_avgpool": row_digits_avgpool,
    "tabular_linf": row_tabular_linf,
    "fashion_cnn": row_fashion_cnn,
    "fashion_adv": row_fashion_adv,
}
#: The one-epoch fine-tune per row: training samples used (fashion: the first 20,000), learning
#: rate, and the adversarial eps of the row's own recipe (adversarially trained rows keep it).
FINETUNE = {
    "fashion_cnn": (20000, 1e-4, 0.0),
    "fashion_adv": (20000, 1e-4, 0.1),
    "digits_robust": (None, 2e-4, 0.1),
}


# ----------------------------------------------------------------------------- measuring
def _acc(model, x, y):
    with torch.no_grad():
        return (
            sum(
                int((model(x[s : s + 512]).argmax(1) == y[s : s + 512]).sum())
                for s in range(0, x.shape[0], 512)
            )
            / x.shape[0]
        )


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def measure(name, work, speed=False):
    model, (xtr, ytr), (xte, yte), extra = ROWS[name](work)
    model.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(xte.shape[0], generator=g)[:N_EVAL]
    x, y = xte[idx], yte[idx]
    cfg = AttackConfig(
        eps=extra.get("eps", 0.1),
        norm=extra.get("norm", "linf"),
        bounds=extra.get("bounds", (0.0, 1.0)),
    )
    cache = work / f"gan_cache_{name}"
    shutil.rmtree(cache, ignore_errors=True)
    gan_mod.clear_memo()

    def gan(m):
        ctx = AttackContext(train_x=xtr, train_y=ytr, cache_dir=cache, quiet=True)
        x_adv, sec = _timed(lambda: gan_mod.gan_attack(m, x, y, cfg, ctx))
        return _acc(m, x_adv, y), ctx.facts["training"], sec

    row = {"row": name, "norm": cfg.norm, "eps": cfg.eps, "n": N_EVAL, "clean": _acc(model, x, y)}
    row["pgd40"] = _acc(model, pgd(model, x, y, cfg, AttackContext()), y)
    row["gan"], cold, _ = gan(model)
    row["diff_points"] = 100 * (row["gan"] - row["pgd40"])
    row["cold"] = {k: cold[k] for k in ("steps", "train_steps", "fit_steps", "seconds", "cost")}
    row["eval_forward_per_sample"] = cold["eval_forward_per_sample"]
    # One more epoch of training, then the warm start from the cold entry of the family.
    n_ft, lr, adv = FINETUNE.get(name, (None, 2e-4, 0.0))
    n_ft = n_ft or xtr.shape[0]
    tuned = _fit(model.requires_grad_(True), xtr[:n_ft], ytr[:n_ft], 1, lr=lr, seed=1, adv_eps=adv)
    tuned.requires_grad_(False)
    gan_mod.clear_memo()
    row["tuned_pgd40"] = _acc(tuned, pgd(tuned, x, y, cfg, AttackContext()), y)
    row["tuned_gan"], warm, _ = gan(tuned)
    row["tuned_diff_points"] = 100 * (row["tuned_gan"] - row["tuned_pgd40"])
    row["warm"] = {k: warm[k] for k in ("mode", "steps", "seconds", "cost")}
    row["warm_step_share"] = warm["steps"] / max(1, cold["steps"])
    if speed:  # the pair just fitted to the tuned model is in this process's memo
        row["speed"] = _speed(tuned, xte, yte, cfg, gan)
    return row


def _speed(model, xte, yte, cfg, gan):
    """The cached pair (the default attack, best of both) vs PGD-40 on the whole test split."""
    from pytest_advrobust.attacks.gan import _best_of
    from pytest_advrobust.attacks.gan_fit import _MEMO as FIT

    heads = [v[0] for v in list(FIT.values())[-2:]]  # the last pair fitted (to ``model``)

    def run_gan():
        return torch.cat(
            [
                _best_of(model, heads, xte[s : s + 256], yte[s : s + 256], cfg)
                for s in range(0, xte.shape[0], 256)
            ]
        )

    adv_g, t_gan = _timed(run_gan)
    adv_p, t_pgd = _timed(lambda: pgd(model, xte, yte, cfg, AttackContext()))
    return {
        "n": int(xte.shape[0]),
        "gan_seconds": t_gan,
        "pgd40_seconds": t_pgd,
        "ratio": t_pgd / t_gan,
        "gan_acc": _acc(model, adv_g, yte),
        "pgd40_acc": _acc(model, adv_p, yte),
    }


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = [
        "| model | clean | PGD-40 | GAN | GAN - PGD (points) | cold steps (s) | "
        "train passes/sample | warm steps (s), share | tuned: PGD-40 / GAN | eval passes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c, w = r["cold"], r["warm"]
        out.append(
            f"| {r['row']} ({r['norm']} {r['eps']:g}) | {r['clean']:.3f} | {r['pgd40']:.3f} | "
            f"{r['gan']:.3f} | {r['diff_points']:+.1f} | {c['steps']} ({c['seconds']:.1f}) | "
            f"{c['cost']['forward_per_sample']:.0f} fwd / "
            f"{c['cost']['backward_per_sample']:.0f} bwd | "
            f"{w['steps']} ({w['seconds']:.1f}), {100 * r['warm_step_share']:.0f}% | "
            f"{r['tuned_pgd40']:.3f} / {r['tuned_gan']:.3f} ({r['tuned_diff_points']:+.1f}) | "
            f"{r['eval_forward_per_sample']} |"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    p.add_argument("--work-dir", type=Path, default=Path(".bench"))
    p.add_argument(
        "--out", type=Path, default=Path(".bench/panel.jsonl"), help="JSON lines, appended"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--speed", action="store_true", help="also time the whole test split")
    p.add_argument(
        "--table", type=Path, default=None, help="print the markdown table of a results file"
    )
    args = p.parse_args(argv)
    if args.table:
        print(table(args.table))
        return 0
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    for name in [r for r in args.rows.split(",") if r]:
        if name not in ROWS:
            p.error(f"--rows: unknown row {name!r}; choose from {', '.join(ROWS)}")
        row = measure(name, args.work_dir, speed=args.speed)
        print(json.dumps(row), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
