"""Benchmark: the default attack on a whole test set, on the CPU or a GPU.

For each Fashion-MNIST row of the panel (``bench_gan_panel.py``: the reference CNN, its
adversarially trained twin, the BatchNorm CNN; weights from the same work folder): the
generator is trained cold on the 60,000 training images on ``--device`` (timed), then on
all 10,000 test images, in one process, one after the other:

* the default attack (the generator, then the cascade) from the cache just written;
* the plugin's PGD-40 (exact early stops);
* the generator alone.

Printed per row, and appended as one JSON line to ``--out``: the training's steps and
seconds, and per attack its robust accuracy, seconds and model passes per image (forward /
backward). Run it once with ``--device cpu`` and once with ``--device cuda`` on the same work
folder to read the GPU-vs-CPU ratio (``--table`` prints both side by side).

Usage::

    python benchmarks/bench_gan.py --device cuda --out .bench/gpu.jsonl
    python benchmarks/bench_gan.py --device cpu --rows fashion_cnn --out .bench/gpu.jsonl
    python benchmarks/bench_gan.py --table .bench/gpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_gan_panel as panel  # noqa: E402

from pytest_advrobust.attacks import gan as gan_mod  # noqa: E402
from pytest_advrobust.attacks.base import AttackConfig, AttackContext  # noqa: E402
from pytest_advrobust.attacks.counting import counted  # noqa: E402
from pytest_advrobust.attacks.gradient import pgd  # noqa: E402
from pytest_advrobust.runtime import Runtime  # noqa: E402

ROWS = ("fashion_cnn", "fashion_adv", "fashion_bn")


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _timed(device, fn):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def _acc(model, x, y):
    with torch.no_grad():
        return sum(
            int((model(x[s : s + 2048]).argmax(1) == y[s : s + 2048]).sum())
            for s in range(0, x.shape[0], 2048)
        ) / max(x.shape[0], 1)


def _attack(name, fn, model, x, y, cfg, ctx, device):
    (x_adv, count), seconds = _timed(device, lambda: counted(fn, model, x, y, cfg, ctx))
    tf, tb, _ = ctx.facts.pop("training_passes", (0, 0, 0.0))
    n = x.shape[0]
    return {
        "attack": name,
        "robust_accuracy": _acc(model, x_adv, y),
        "seconds": seconds,
        "forward_per_sample": (count.forward - tf) / n,
        "backward_per_sample": (count.backward - tb) / n,
    }


def measure(name, work, device, batch, gan_steps=None, n=None):
    model, (xtr, ytr), (xte, yte), _ = panel.ROWS[name](work)
    model = model.to(device).requires_grad_(False)
    x, y = xte[:n].to(device), yte[:n].to(device)
    cfg = AttackConfig(eps=0.1, batch_size=batch, gan_steps=gan_steps)
    cache = work / f"gan_cache_device_{name}_{torch.device(device).type}"
    shutil.rmtree(cache, ignore_errors=True)
    gan_mod.clear_memo()
    ctx = AttackContext(device, xtr, ytr, Runtime(cache_dir=cache, quiet=True))
    (gen, facts), train_seconds = _timed(device, lambda: gan_mod.obtain_generator(model, cfg, ctx))
    gan_mod.clear_memo()  # the attack below loads the entry, as the next CI job would

    def alone(m, x_, y_, c, _ctx):
        with torch.no_grad():
            return torch.cat([gen(x_[s : s + batch], c.eps) for s in range(0, x_.shape[0], batch)])

    warm_ctx = _ctx(device, xtr, ytr, cache)
    runs = [
        _attack("default", gan_mod.gan_attack, model, x, y, cfg, warm_ctx, device),
        _attack("pgd40", pgd, model, x, y, cfg, AttackContext(device=device), device),
        _attack("generator_alone", alone, model, x, y, cfg, AttackContext(device=device), device),
    ]
    return {
        "row": name,
        "device": str(device),
        "device_name": _device_name(device),
        "torch": torch.__version__,
        "n": int(x.shape[0]),
        "clean": _acc(model, x, y),
        "training": {
            "steps": facts["steps"],
            "seconds": train_seconds,
            "holdout_success": facts["holdout_success"],
        },
        "attacks": runs,
    }


def _ctx(device, xtr, ytr, cache):
    return AttackContext(device, xtr, ytr, Runtime(cache_dir=cache, quiet=True))


def _device_name(device):
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = [
        "| row | device | training steps (s) | default: robust acc, s, fwd/bwd per image | "
        "PGD-40: robust acc, s, fwd/bwd | generator alone: robust acc, s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        a = {run["attack"]: run for run in r["attacks"]}
        d, p, g = a["default"], a["pgd40"], a["generator_alone"]
        out.append(
            f"| {r['row']} | {r['device_name']} | {r['training']['steps']} "
            f"({r['training']['seconds']:.1f}) | {d['robust_accuracy']:.4f}, {d['seconds']:.2f}, "
            f"{d['forward_per_sample']:.1f}/{d['backward_per_sample']:.1f} | "
            f"{p['robust_accuracy']:.4f}, {p['seconds']:.2f}, "
            f"{p['forward_per_sample']:.1f}/{p['backward_per_sample']:.1f} | "
            f"{g['robust_accuracy']:.4f}, {g['seconds']:.3f} |"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--work-dir", type=Path, default=Path(".bench"))
    p.add_argument("--out", type=Path, default=Path(".bench/device.jsonl"))
    p.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    p.add_argument("--batch-size", type=int, default=None, help="default: 256 CPU, 4096 CUDA")
    p.add_argument("--table", type=Path, default=None)
    p.add_argument("--gan-steps", type=int, default=None, help="default: the plugin's budget")
    p.add_argument("--n", type=int, default=None, help="test images (default: all 10,000)")
    args = p.parse_args(argv)
    if args.table:
        print(table(args.table))
        return 0
    torch.set_num_threads(args.threads)
    cuda = torch.device(args.device).type == "cuda"
    batch = args.batch_size or (4096 if cuda else 256)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in [r for r in args.rows.split(",") if r]:
        row = measure(name, args.work_dir, args.device, batch, args.gan_steps, args.n)
        print(json.dumps(row), flush=True)
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
