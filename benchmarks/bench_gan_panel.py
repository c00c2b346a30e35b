"""Benchmark: the default ``gan`` attack against PGD-40 and APGD-T on a panel of models.

Per row: a model (version N), its training split (the generator's training data), its test
split, and version N+1 (N trained one more epoch). The generator is trained once, on
version N, and cached. Three cells per row, each attacked by the plugin's own code:

* ``eval``: the evaluation samples (512 drawn with seed 0 from the test split; half the test
  split where it holds fewer than 1,024);
* ``other``: as many other test samples, which no setting was looked at on;
* ``next``: version N+1 on the evaluation samples, attacked with version N's cached
  generator as the plugin would use it (the retrain rule decides; its decision is printed).

In every cell: clean accuracy; PGD-40 (the plugin's ``pgd``: step 2.5 eps / 40, exact early
stops) and APGD-T (9 targets, 100 iterations, AutoAttack's schedule) robust accuracy with
their model passes per sample (forward / backward, counted by
:func:`pytest_advrobust.attacks.counting.counted`); the default attack's robust accuracy and
passes (the one-time generator training apart), with its strength check's passes added, the
check's verdict, the generator-alone accuracy and the same cascade started from the clean
input (the control). Plugin defaults: L-inf eps 0.1 in [0, 1] unless the row says otherwise.

Usage (one torch thread; rows can be run one at a time and appended)::

    python benchmarks/bench_gan_panel.py --rows digits_cnn,digits_mlp --out .bench/panel.jsonl
    python benchmarks/bench_gan_panel.py --table .bench/panel.jsonl          # markdown tables
    python benchmarks/bench_gan_panel.py --per-commit --out .bench/commit.jsonl

``--per-commit`` times one robust test per attack through the plugin's evaluation (512 samples,
cheap sanity checks) on the Fashion-MNIST reference CNN and its fine-tuned twin with a warm
generator cache, interleaved, and prints the ratio of the default test's seconds to the PGD-40
test's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
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
from pytest_advrobust.attacks.apgd import apgd_t  # noqa: E402
from pytest_advrobust.attacks.base import AttackConfig, AttackContext  # noqa: E402
from pytest_advrobust.attacks.cascade import DEFAULT_BUDGET, Cascade  # noqa: E402
from pytest_advrobust.attacks.counting import counted  # noqa: E402
from pytest_advrobust.attacks.gradient import pgd  # noqa: E402
from pytest_advrobust.runtime import Runtime  # noqa: E402

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


def row_fashion_bn(work):
    """Not used to choose any setting: a BatchNorm CNN with average pooling, another seed."""
    tr, te = _fashion()

    def build():
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 10),
        )

    m = _cached(
        work,
        "fashion_bn",
        build,
        lambda m: _fit(m, tr[0][:20000], tr[1][:20000], 1, lr=1e-3, seed=5, batch=128),
    )
    return m, tr, te, {}


def row_digits_gelu(work):
    """Not used to choose any setting: a deeper GELU MLP with dropout (off in eval mode)."""
    (xtr, ytr), (xte, yte) = _digits()

    def build():
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 96),
            nn.GELU(),
            nn.Dropout(0.2),
            nn.Linear(96, 96),
            nn.GELU(),
            nn.Linear(96, 10),
        )

    m = _cached(work, "digits_gelu", build, lambda m: _fit(m, xtr, ytr, 40, lr=1e-3, seed=11))
    return m, (xtr, ytr), (xte, yte), {}


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
    "fashion_bn": row_fashion_bn,
    "digits_gelu": row_digits_gelu,
}
#: Rows whose cells were looked at while the cascade's budget was chosen (their ``eval`` cells).
TUNED_ON = ("digits_cnn", "digits_bn", "fashion_cnn", "fashion_adv")

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


def _passes(count, n, fwd=0, bwd=0):
    return round((count.forward - fwd) / n, 2), round((count.backward - bwd) / n, 2)


def _reference(attack, model, x, y, cfg):
    x_adv, count = counted(attack, model, x, y, cfg, AttackContext())
    fwd, bwd = _passes(count, x.shape[0])
    return {"acc": _acc(model, x_adv, y), "fwd": fwd, "bwd": bwd, "seconds": count.seconds}


def _default_attack(model, x, y, cfg, ctx, n_classes):
    """The gan attack as the plugin runs it, its strength check, and the clean-start control."""
    from pytest_advrobust.sanity import GanRecord, strength_check

    x_adv, count = counted(gan_mod.gan_attack, model, x, y, cfg, ctx)
    tf, tb, tsec = ctx.facts.get("training_passes", (0, 0, 0.0))
    n = x.shape[0]
    fwd, bwd = _passes(count, n, tf, tb)
    with torch.no_grad():
        clean_ok = torch.cat(
            [model(x[s : s + 512]).argmax(1) == y[s : s + 512] for s in range(0, n, 512)]
        )
        adv_ok = torch.cat(
            [model(x_adv[s : s + 512]).argmax(1) == y[s : s + 512] for s in range(0, n, 512)]
        )
    record = GanRecord(
        x_adv, clean_ok, clean_ok & adv_ok, ctx.facts["cascade_passes"], DEFAULT_BUDGET
    )
    check, flag, cost = strength_check(model, x, y, record, cfg, "cheap", n_classes)
    out = {
        "acc": _acc(model, x_adv, y),
        "fwd": fwd,
        "bwd": bwd,
        "seconds": count.seconds - tsec,
        "check_fwd": round(cost["forward_per_sample"], 2),
        "check_bwd": round(cost["backward_per_sample"], 2),
        "check": {
            k: check[k]
            for k in ("checked", "standing", "reference", "extra_successes", "p_value", "weaker")
        },
        "control": check["control"],
        "generator_alone": ctx.facts["cascade"]["generator_alone_accuracy"],
        "reuse": ctx.facts["training"]["reuse"]["decision"],
        "stages": ctx.facts["cascade"]["stages"],
    }
    return out


def _clean_start(model, x, y, cfg):
    def run(m, x, y):
        cas = Cascade(m, x, y, cfg, DEFAULT_BUDGET)
        cas.gradient_stages()
        return cas.x_adv

    x_adv, count = counted(run, model, x, y)
    fwd, bwd = _passes(count, x.shape[0])
    return {"acc": _acc(model, x_adv, y), "fwd": fwd, "bwd": bwd, "seconds": count.seconds}


def _cell(model, x, y, cfg, ctx, n_classes):
    apgdt_cfg = AttackConfig(
        eps=cfg.eps, norm=cfg.norm, bounds=cfg.bounds, steps=100, targets=9, seed=cfg.seed
    )
    return {
        "n": int(x.shape[0]),
        "clean": _acc(model, x, y),
        "pgd40": _reference(pgd, model, x, y, cfg),
        "apgdt": _reference(apgd_t, model, x, y, apgdt_cfg),
        "gan": _default_attack(model, x, y, cfg, ctx, n_classes),
        "clean_start": _clean_start(model, x, y, cfg),
    }


def measure(name, work):
    model, (xtr, ytr), (xte, yte), extra = ROWS[name](work)
    model.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    n = min(N_EVAL, xte.shape[0] // 2)
    perm = torch.randperm(xte.shape[0], generator=g)
    x, y = xte[perm[:n]], yte[perm[:n]]
    xo, yo = xte[perm[n : 2 * n]], yte[perm[n : 2 * n]]
    cfg = AttackConfig(
        eps=extra.get("eps", 0.1),
        norm=extra.get("norm", "linf"),
        bounds=extra.get("bounds", (0.0, 1.0)),
    )
    with torch.no_grad():
        n_classes = int(model(x[:2]).shape[1])
    cache = work / f"gan_cache_{name}"
    shutil.rmtree(cache, ignore_errors=True)

    def ctx():
        gan_mod.clear_memo()  # every cell a new process: only the disk cache remains
        return AttackContext(train_x=xtr, train_y=ytr, runtime=Runtime(cache_dir=cache, quiet=True))

    first = ctx()
    t0 = time.perf_counter()
    gen, facts = gan_mod.obtain_generator(model, cfg, first)
    row = {
        "row": name,
        "norm": cfg.norm,
        "eps": cfg.eps,
        "tuned_on": name in TUNED_ON,
        "generator": {
            "mode": facts["mode"],
            "steps": facts["steps"],
            "seconds": round(time.perf_counter() - t0, 1),
            "forward_passes": facts["cost"]["forward_passes"],
            "backward_passes": facts["cost"]["backward_passes"],
            "holdout_success": facts["holdout_success"],
        },
        "cells": {},
    }
    row["cells"]["eval"] = _cell(model, x, y, cfg, ctx(), n_classes)
    row["cells"]["other"] = _cell(model, xo, yo, cfg, ctx(), n_classes)
    n_ft, lr, adv = FINETUNE.get(name, (None, 2e-4, 0.0))
    n_ft = n_ft or xtr.shape[0]
    tuned = _fit(model.requires_grad_(True), xtr[:n_ft], ytr[:n_ft], 1, lr=lr, seed=1, adv_eps=adv)
    tuned.requires_grad_(False)
    row["cells"]["next"] = _cell(tuned, x, y, cfg, ctx(), n_classes)
    return row


# ----------------------------------------------------------------------------- per commit
def per_commit(work, repeats=3):
    """Seconds of one default test and one PGD-40 test through the plugin's evaluation, on the
    Fashion-MNIST reference CNN and its fine-tuned twin, with a warm generator cache."""
    from pytest_advrobust.evaluation.run import run_evaluation
    from pytest_advrobust.settings.robust import RobustSettings

    model, (xtr, ytr), (xte, yte), _ = ROWS["fashion_cnn"](work)
    n_ft, lr, adv = FINETUNE["fashion_cnn"]
    twin = _fit(
        ROWS["fashion_cnn"](work)[0].requires_grad_(True), xtr[:n_ft], ytr[:n_ft], 1, lr=lr, seed=1
    )
    cache = work / "gan_cache_per_commit"
    runtime = Runtime(cache_dir=cache, quiet=True)
    gan, pgd_ = (RobustSettings(threshold=1.0, attacks=(a,)) for a in ("gan", "pgd"))
    gan_mod.clear_memo()
    run_evaluation(
        model, (xte, yte), gan, train_data=(xtr, ytr), runtime=runtime
    )  # warms the cache
    out = []
    for label, m in (("fashion_cnn", model), ("fashion_cnn_tuned", twin)):
        times = {"gan": [], "pgd": []}
        for _ in range(repeats):
            for attack, settings in (("gan", gan), ("pgd", pgd_)):
                gan_mod.clear_memo()  # a new CI job: the generator comes from the disk cache
                # a new commit's model: its evaluation is not stored yet (only the generator is)
                shutil.rmtree(cache / "evaluations", ignore_errors=True)
                t0 = time.perf_counter()
                res = run_evaluation(
                    m, (xte, yte), settings, train_data=(xtr, ytr), runtime=runtime
                )
                times[attack].append(time.perf_counter() - t0)
                if attack == "gan":
                    mode = res.training["mode"]
        med = {k: statistics.median(v) for k, v in times.items()}
        out.append(
            {
                "model": label,
                "gan_seconds": med["gan"],
                "pgd40_seconds": med["pgd"],
                "ratio": med["gan"] / med["pgd"],
                "generator": mode,
                "repeats": repeats,
            }
        )
    return out


# ----------------------------------------------------------------------------- tables
def _pts(a, b):
    return 100 * (a - b)


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "cells" in r]
    out = [
        "| model | cell | n | clean | PGD-40 | APGD-T | default | default - APGD-T (points) | "
        "generator alone | clean start | passes fwd/bwd: PGD-40 | default | default + check | "
        "check flag | retrain rule |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        for cell_name, c in r["cells"].items():
            gp, g = c["pgd40"], c["gan"]
            name = f"{r['row']} ({r['norm']} {r['eps']:g})" + (" *" if r["tuned_on"] else "")
            out.append(
                f"| {name} | {cell_name} | {c['n']} | {c['clean']:.3f} | {gp['acc']:.3f} | "
                f"{c['apgdt']['acc']:.3f} | {g['acc']:.3f} | "
                f"{_pts(g['acc'], c['apgdt']['acc']):+.1f} | {g['generator_alone']:.3f} | "
                f"{c['clean_start']['acc']:.3f} | {gp['fwd']:.1f}/{gp['bwd']:.1f} | "
                f"{g['fwd']:.1f}/{g['bwd']:.1f} | "
                f"{g['fwd'] + g['check_fwd']:.1f}/{g['bwd'] + g['check_bwd']:.1f} | "
                f"{'FLAG' if g['check']['weaker'] else '-'} | {g['reuse']} |"
            )
    return "\n".join(out)


def contribution(path: Path) -> str:
    """Per row and cell: the default attack beside the same cascade from the clean input."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = [
        "| model | cell | generator success | default: robust acc, passes fwd/bwd | "
        "clean start: robust acc, passes fwd/bwd | passes saved by the generator |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in [r for r in rows if "cells" in r]:
        for cell_name, c in r["cells"].items():
            g, k = c["gan"], c["clean_start"]
            used, base = g["fwd"] + g["bwd"], k["fwd"] + k["bwd"]
            saved = 100 * (1 - used / base) if base else 0.0
            success = 1 - g["generator_alone"] / max(c["clean"], 1e-9)
            out.append(
                f"| {r['row']} | {cell_name} | {success:.2f} | "
                f"{g['acc']:.3f}, {g['fwd']:.1f}/{g['bwd']:.1f} | "
                f"{k['acc']:.3f}, {k['fwd']:.1f}/{k['bwd']:.1f} | {saved:+.0f}% |"
            )
    return "\n".join(out)


def criteria(path: Path) -> str:
    """Each cell against the bars: at most 0.5 points above APGD-T; passes (forward and backward)
    at most PGD-40's, and at most 1.25 times with the check."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines, ok = [], True
    for r in [r for r in rows if "cells" in r]:
        for cell_name, c in r["cells"].items():
            g, p = c["gan"], c["pgd40"]
            strong = _pts(g["acc"], c["apgdt"]["acc"]) <= 0.5 + 1e-9
            cheap = g["fwd"] <= p["fwd"] and g["bwd"] <= p["bwd"]
            checked = (
                g["fwd"] + g["check_fwd"] <= 1.25 * p["fwd"]
                and g["bwd"] + g["check_bwd"] <= 1.25 * p["bwd"]
            )
            ok &= strong and cheap and checked
            if not (strong and cheap and checked):
                lines.append(
                    f"{r['row']}/{cell_name}: strong={strong} cheap={cheap} with-check={checked}"
                )
    lines.append("every cell meets the bars" if ok else "some cells miss a bar")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    p.add_argument("--work-dir", type=Path, default=Path(".bench"))
    p.add_argument(
        "--out", type=Path, default=Path(".bench/panel.jsonl"), help="JSON lines, appended"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--per-commit", action="store_true", help="time the tests through the plugin")
    p.add_argument(
        "--table", type=Path, default=None, help="print the markdown table of a results file"
    )
    args = p.parse_args(argv)
    if args.table:
        print(table(args.table))
        print()
        print(contribution(args.table))
        print()
        print(criteria(args.table))
        return 0
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.per_commit:
        results = per_commit(args.work_dir)
    else:
        names = [r for r in args.rows.split(",") if r]
        for name in names:
            if name not in ROWS:
                p.error(f"--rows: unknown row {name!r}; choose from {', '.join(ROWS)}")
        results = (measure(name, args.work_dir) for name in names)
    for row in results:
        print(json.dumps(row), flush=True)
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
