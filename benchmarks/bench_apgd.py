"""Benchmark: the plugin's APGD-CE and APGD-T beside AutoAttack's own code, and PGD-40.

On the naturally trained and the adversarially trained Fashion-MNIST CNN of
``bench_pgd.py`` (same weights, same cache folder), the first ``-n`` test
images, L-inf eps 0.1, it runs

* PGD-40 (step 0.01, no random start): ``pytest_advrobust.attacks.gradient.pgd``;
* APGD-CE, ``--steps`` iterations (AutoAttack: 100), one restart:
  ``pytest_advrobust.attacks.apgd.apgd`` and ``pyautoattack``'s ``APGDAttack``;
* APGD-T, ``--targets`` target classes (AutoAttack: 9), ``--steps`` iterations
  each: ``apgd_t`` and ``pyautoattack``'s ``APGDAttack_targeted``;

and prints the robust accuracy of each, the ensemble of APGD-CE and APGD-T
(worst case per image), the seconds, the forward and backward passes per image,
and, per pair ours/AutoAttack, the images they disagree on with McNemar's test
(agreement within sampling noise: |b - c| <= 1.96 sqrt(b + c) for the b and c
images that only one of them fools). Exit status 1 when APGD is weaker than
PGD-40 beyond that noise or the pairs disagree beyond it.

Usage::

    pip install pyautoattack                       # AutoAttack as published on PyPI
    python benchmarks/bench_apgd.py --threads 1    # both models, minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_pgd import FASHION_ROOT, correct, fashion_setting  # noqa: E402

from pytest_advrobust.attacks.apgd import apgd, apgd_t  # noqa: E402
from pytest_advrobust.attacks.base import AttackConfig  # noqa: E402
from pytest_advrobust.attacks.counting import counting  # noqa: E402
from pytest_advrobust.attacks.gradient import pgd  # noqa: E402


def methods(args) -> Dict[str, Callable]:
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    cfg = AttackConfig(eps=args.eps, steps=args.steps, batch_size=args.batch, targets=args.targets)
    pgd_cfg = AttackConfig(eps=args.eps, steps=40, step_size=0.01, batch_size=args.batch)

    def theirs_ce(model, x, y):
        return APGDAttack(
            model, n_iter=args.steps, eps=args.eps, seed=0, device=x.device, loss="ce"
        ).perturb(x, y)

    def theirs_t(model, x, y):
        return APGDAttack_targeted(
            model,
            n_iter=args.steps,
            eps=args.eps,
            seed=0,
            device=x.device,
            n_target_classes=args.targets,
        ).perturb(x, y)

    return {
        "PGD-40 (ours)": lambda m, x, y: pgd(m, x, y, pgd_cfg),
        "APGD-CE (ours)": lambda m, x, y: apgd(m, x, y, cfg),
        "APGD-CE (AutoAttack)": theirs_ce,
        "APGD-T (ours)": lambda m, x, y: apgd_t(m, x, y, cfg),
        "APGD-T (AutoAttack)": theirs_t,
    }


def mcnemar(a: torch.Tensor, b: torch.Tensor):
    """Images only ``a`` calls robust, only ``b`` does, and whether that is within noise."""
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    return only_a, only_b, abs(only_a - only_b) <= 1.96 * math.sqrt(only_a + only_b) + 1e-9


def run_model(model, x, y, args, log) -> Dict:
    clean = correct(model, x, y, args.batch)
    log(
        f"{x.shape[0]} images, clean accuracy {clean.float().mean():.3f}, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    robust, rows = {}, {}
    for name, fn in methods(args).items():
        outs = []
        with counting(model) as (counted_model, count):
            for s in range(0, x.shape[0], args.batch):
                xb, yb = x[s : s + args.batch], y[s : s + args.batch]
                outs.append(fn(counted_model, xb, yb).detach())
        x_adv = torch.cat(outs)
        if float((x_adv - x).abs().amax()) > args.eps + 1e-6:
            log(f"warning: {name} left the eps-ball")
        robust[name] = correct(model, x_adv, y, args.batch) & clean
        rows[name] = dict(
            count.per_sample(x.shape[0]), robust_accuracy=float(robust[name].float().mean())
        )
        log(
            f"{name}: robust {rows[name]['robust_accuracy']:.3f}, {count.seconds:.1f} s "
            f"(load average {os.getloadavg()[0]:.1f})"
        )
    for who in ("ours", "AutoAttack"):
        both = robust[f"APGD-CE ({who})"] & robust[f"APGD-T ({who})"]
        robust[f"APGD-CE + APGD-T ({who})"] = both
        rows[f"APGD-CE + APGD-T ({who})"] = {"robust_accuracy": float(both.float().mean())}
    print()
    print(
        f"{'method':30s} {'robust acc':>10s} {'seconds':>8s} {'fwd/image':>10s} {'bwd/image':>10s}"
    )
    for name, r in rows.items():
        extra = (
            (
                f"{r['seconds']:8.1f} {r['forward_per_sample']:10.2f} "
                f"{r['backward_per_sample']:10.2f}"
            )
            if "seconds" in r
            else ""
        )
        print(f"{name:30s} {r['robust_accuracy'] * 100:9.1f}% {extra}")
    checks = {}
    for what in ("APGD-CE", "APGD-T", "APGD-CE + APGD-T"):
        b, c, ok = mcnemar(robust[f"{what} (ours)"], robust[f"{what} (AutoAttack)"])
        checks[f"{what}: ours vs AutoAttack"] = {
            "only_ours_robust": b,
            "only_autoattack_robust": c,
            "within": ok,
        }
        print(
            f"{what}: robust only under ours {b}, only under AutoAttack {c}: "
            f"{'within' if ok else 'OUTSIDE'} sampling noise (McNemar, 95%)"
        )
    for what in ("APGD-CE (ours)", "APGD-T (ours)", "APGD-CE + APGD-T (ours)"):
        b, c, ok = mcnemar(robust[what], robust["PGD-40 (ours)"])
        stronger = b <= c or ok
        checks[f"{what} at least as strong as PGD-40"] = {
            "only_apgd_robust": b,
            "only_pgd_robust": c,
            "within": stronger,
        }
        print(
            f"{what} vs PGD-40: robust only under APGD {b}, only under PGD-40 {c}: "
            f"{'at least as strong' if stronger else 'WEAKER'}"
        )
    print()
    return {"clean_accuracy": float(clean.float().mean()), "methods": rows, "checks": checks}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("natural", "robust", "both"), default="both")
    p.add_argument("--fashion-root", type=Path, default=FASHION_ROOT)
    p.add_argument("--work-dir", type=Path, default=Path(".bench"))
    p.add_argument("-n", "--samples", type=int, default=1000)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=100, help="APGD iterations (AutoAttack: 100)")
    p.add_argument("--targets", type=int, default=9, help="APGD-T target classes (AutoAttack: 9)")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(f"# {msg}", flush=True)

    log(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
        f"L-inf eps {args.eps:g}; APGD {args.steps} iterations, APGD-T {args.targets} targets"
    )
    out, ok = {}, True
    kinds = ("natural", "robust") if args.model == "both" else (args.model,)
    for kind in kinds:
        model, (x_all, y_all) = fashion_setting(
            args.work_dir, args.fashion_root, log, kind == "robust"
        )
        model.eval()
        for prm in model.parameters():
            prm.requires_grad_(False)
        log(f"{kind} CNN")
        n = min(args.samples, x_all.shape[0])
        t0 = time.perf_counter()
        out[kind] = run_model(model, x_all[:n].contiguous(), y_all[:n], args, log)
        out[kind]["seconds"] = time.perf_counter() - t0
        ok &= all(c["within"] for c in out[kind]["checks"].values())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
