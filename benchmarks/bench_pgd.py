"""Benchmark: the plugin's PGD against a plain PGD loop, torchattacks and the gradient floor.

On the same samples, with the same attack settings (L-inf, untargeted
cross-entropy, no random start), it times

* floor: ``steps`` forward+backward passes with respect to the input (no
  parameter gradients): what any PGD-``steps`` must at least cost (``--no-floor``
  skips it);
* plain: a PGD loop that attacks every sample for all ``steps``;
* ours: ``pytest_advrobust.attacks.gradient.pgd``, which stops a sample at its
  first misclassification or when its iterate repeats an earlier one exactly;
* torchattacks: ``torchattacks.PGD(model, eps, alpha, steps, random_start=False)``
  when torchattacks is installed;

and prints, per method, the robust accuracy, the median seconds over
``--repeats`` rounds (the methods take turns on each batch, so they share the
machine's load), the ratio to the floor (or the plain loop) and to ours
(per-round ratios, median over rounds), the forward and backward passes per
image (counted in the first round: the work, whatever the load), and on how
many samples the methods disagree about whether the model is still right (same
settings: expected 0; the exit status is 1 otherwise).

Default setting: Fashion-MNIST, the first 1,000 test images, eps 0.1, step
0.01, 40 steps, batch 250, on two models in one run (``--model both``): the
small reference CNN (conv 32, conv 64, max-pool, fc 128, fc 10; Adam 1e-3,
batch 128, 2 epochs, seed 0) and the same CNN adversarially trained with FGSM
from a random start (eps 0.1, step 1.25 eps, Wong et al. 2020; 3 epochs on the
first 20,000 training images, seed 0). Both are trained once and kept in
``--work-dir``. ``--data digits`` runs the same on scikit-learn's 8x8 digits.
``--threads 1`` gives the steadiest ratios on a busy machine.

Usage::

    python benchmarks/bench_pgd.py --threads 1      # both Fashion-MNIST models
    python benchmarks/bench_pgd.py --data digits    # about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pytest_advrobust.attacks.base import AttackConfig, AttackContext  # noqa: E402
from pytest_advrobust.attacks.counting import counting  # noqa: E402
from pytest_advrobust.attacks.gradient import pgd  # noqa: E402
from pytest_advrobust.inputs.data import load_idx_dataset  # noqa: E402

FASHION_ROOT = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))

Pair = Tuple[torch.Tensor, torch.Tensor]


# ------------------------------------------------------------------------ data and models


def fashion_setting(
    work_dir: Path, root: Path, log, robust: bool = False
) -> Tuple[nn.Module, Pair]:
    """The reference CNN (trained once, then loaded from ``work_dir``) and the test set.

    ``robust``: the same CNN adversarially trained (FGSM with a random start,
    eps 0.1, step 1.25 eps, Wong et al. 2020; 3 epochs on the first 20,000
    training images, Adam 1e-3, batch 128, seed 0), trained once and cached.
    """
    from fashion import robust_cnn, trained_cnn

    x_test, y_test = load_idx_dataset(root, "test")
    x_train, y_train = load_idx_dataset(root, "train")
    if robust:
        if not sorted(Path(work_dir).glob("cnn_fgsmrs_e3_n20000_eps0.1_s0.*")):
            log("adversarially training the CNN (3 epochs on 20,000 images; once, then cached)")
        return robust_cnn(x_train, y_train, work_dir=work_dir, log=log), (x_test, y_test)
    weights = sorted(Path(work_dir).glob("cnn_e2_s0.*"))
    if not weights:
        log("training the reference CNN (2 epochs on 60,000 images; once, then cached)")
    model = trained_cnn(x_train, y_train, work_dir=work_dir, epochs=2, seed=0, log=log)
    return model, (x_test, y_test)


class DigitsCNN(nn.Module):
    """conv(1->16, 3) ReLU, conv(16->32, 3) ReLU, max-pool 2, fc(512->64) ReLU, fc(64->10)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(512, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def digits_setting(work_dir: Path, log) -> Tuple[nn.Module, Pair]:
    """A naturally trained CNN on sklearn's digits (1,797 8x8 images, no download).

    Trains on a seeded 70% and returns the other 30% (539 images) as the test set.
    """
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    n_test = 539
    test, train = perm[:n_test].sort().values, perm[n_test:]
    torch.manual_seed(0)
    model = DigitsCNN()
    path = Path(work_dir) / "digits_cnn_e15_s0.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval(), (x[test], y[test])
    log("training the digits CNN (15 epochs on 1,258 images; once, then cached)")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(15):
        order = train[torch.randperm(train.numel(), generator=g)]
        for s in range(0, order.numel(), 64):
            idx = order[s : s + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model, (x[test], y[test])


# ------------------------------------------------------------------------------- methods


def _batches(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


# Each method attacks one batch: the harness hands the methods the same batch in
# turn, so that on a noisy machine they share its load at a fine grain.


def floor(model, x, y, eps, step, steps) -> Optional[torch.Tensor]:
    """``steps`` forward+backward passes w.r.t. the input; no update, no result."""
    for _ in range(steps):
        xg = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        torch.autograd.grad(loss, xg)
    return None


def plain_pgd(model, x, y, eps, step, steps) -> torch.Tensor:
    """Every sample for every step: sign-gradient step, projection onto the ball, clip to [0, 1].

    Per sample it returns the first iterate the model misclassifies (any step
    counts, as in ours), else the last iterate.
    """
    x_adv, first = x.clone(), x.clone()
    won = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for t in range(steps + 1):
        x_adv.requires_grad_(True)
        with torch.set_grad_enabled(t < steps):
            logits = model(x_adv)
        new = (logits.argmax(1) != y) & ~won
        first[new], won = x_adv.detach()[new], won | new
        if t == steps:
            break
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        moved = x_adv.detach() + step * grad.sign()
        x_adv = (x + (moved - x).clamp(-eps, eps)).clamp(0, 1)
    return torch.where(won.view(-1, *([1] * (x.dim() - 1))), first, x_adv.detach())


def ours(model, x, y, eps, step, steps) -> torch.Tensor:
    cfg = AttackConfig(
        eps=eps,
        norm="linf",
        steps=steps,
        step_size=step,
        random_start=False,
        restarts=1,
        bounds=(0.0, 1.0),
        batch_size=x.shape[0],
        early_stop=True,
    )
    return pgd(model, x, y, cfg, AttackContext(device=x.device))


def make_torchattacks(model, eps, step, steps) -> Optional[Callable]:
    try:
        import torchattacks
    except ImportError:
        return None

    def run(model_, x, y, eps_, step_, steps_) -> torch.Tensor:
        # made per call on the model it is given: the counted one (the warm-up: fewer steps)
        return torchattacks.PGD(model_, eps=eps, alpha=step, steps=steps_, random_start=False)(x, y)

    run.version = torchattacks.__version__  # type: ignore[attr-defined]
    return run


# ---------------------------------------------------------------------------------- main


@torch.no_grad()
def correct(model, x, y, batch) -> torch.Tensor:
    return torch.cat([model(x[sl]).argmax(1) == y[sl] for sl in _batches(x.shape[0], batch)])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", choices=("fashion", "digits"), default="fashion")
    p.add_argument(
        "--model",
        choices=("natural", "robust", "both"),
        default="both",
        help="Fashion-MNIST: the naturally trained CNN, the adversarially trained "
        "one (FGSM with random start, trained here and cached), or both "
        "(default)",
    )
    p.add_argument(
        "--fashion-root",
        type=Path,
        default=FASHION_ROOT,
        help="folder of the Fashion-MNIST IDX files (default %(default)s)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=Path(".bench"),
        help="folder for trained weights (default %(default)s)",
    )
    p.add_argument(
        "-n", "--samples", type=int, default=1000, help="first N test images (default %(default)s)"
    )
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--step", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's own default, one per core)",
    )
    p.add_argument("--no-torchattacks", action="store_true", help="skip torchattacks")
    p.add_argument("--no-floor", action="store_true", help="skip the floor (saves a third)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def _time_methods(methods: Dict[str, Callable], model, x, y, args, device, log):
    """Interleaved timing: per batch, every method in turn (the first one rotates).

    The first round also counts each method's forward and backward passes (a
    forward hook per call, the same small overhead for every method).
    """
    names = list(methods)
    times: Dict[str, List[float]] = {m: [] for m in names}
    counts = {m: [0, 0] for m in names}
    results: Dict[str, torch.Tensor] = {}
    batches = list(_batches(x.shape[0], args.batch))
    for fn in methods.values():  # warm-up (allocator, kernels) on one batch, untimed
        fn(model, x[batches[0]], y[batches[0]], args.eps, args.step, min(2, args.steps))
    for r in range(args.repeats):
        spent = dict.fromkeys(names, 0.0)
        outs: Dict[str, torch.Tensor] = {m: torch.empty_like(x) for m in names}
        for b, sl in enumerate(batches):
            k = (r * len(batches) + b) % len(names)
            for m in names[k:] + names[:k]:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                with counting(model) as (counted_model, count):
                    out = methods[m](counted_model, x[sl], y[sl], args.eps, args.step, args.steps)
                if r == 0:
                    counts[m][0] += count.forward
                    counts[m][1] += count.backward
                if device.type == "cuda":
                    torch.cuda.synchronize()
                spent[m] += time.perf_counter() - t0
                if out is not None:
                    outs[m][sl] = out.detach()
        for m in names:
            times[m].append(spent[m])
            if m == "floor":
                continue
            if m in results and not torch.equal(results[m], outs[m]):
                log(f"warning: {m} gave a different result in repeat {r + 1}")
            results[m] = outs[m]
        log(
            f"repeat {r + 1}/{args.repeats}: "
            + ", ".join(f"{m} {times[m][-1]:.2f}s" for m in names)
            + f" (load average {os.getloadavg()[0]:.1f})"
        )
    n = x.shape[0]
    cost = {
        m: {
            "forward_per_sample": round(f / n, 3),
            "backward_per_sample": round(b / n, 3),
            "seconds": round(statistics.median(times[m]), 3),
        }
        for m, (f, b) in counts.items()
    }
    return times, results, cost


def _print_table(rows) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for k, row in enumerate(rows):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            )
        )
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print()


def run_setting(model, x, y, name: str, args, device, log) -> Dict:
    """Time, count and compare the methods on one model; return the summary."""
    n = x.shape[0]
    methods: Dict[str, Callable] = {"floor": floor, "plain": plain_pgd, "ours": ours}
    if args.no_floor:
        del methods["floor"]
    ta = None if args.no_torchattacks else make_torchattacks(model, args.eps, args.step, args.steps)
    if ta is not None:
        methods["torchattacks"] = ta
    labels = {
        "floor": f"floor: {args.steps} x forward+backward w.r.t. the input",
        "plain": f"plain PGD-{args.steps} loop (no early stop)",
        "ours": "pytest_advrobust pgd (exact stops)",
        "torchattacks": f"torchattacks {getattr(ta, 'version', '')} PGD",
    }
    clean = correct(model, x, y, args.batch)
    log(f"{name}: {n} images, clean accuracy {clean.float().mean():.3f}")
    log(
        f"L-inf eps {args.eps:g}, step {args.step:g}, {args.steps} steps, no random start, "
        f"batch {args.batch}, {args.repeats} repeats"
    )
    log(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, device {device}, "
        f"{platform.processor() or platform.machine()}"
    )
    times, results, cost = _time_methods(methods, model, x, y, args, device, log)
    med = {m: statistics.median(t) for m, t in times.items()}
    robust = {m: correct(model, results[m], y, args.batch) & clean for m in results}
    for m, xa in results.items():  # every method must stay inside the ball and [0, 1]
        dev = float((xa - x).abs().amax())
        if dev > args.eps + 1e-6 or float(xa.min()) < 0 or float(xa.max()) > 1:
            log(f"warning: {m} left the eps-ball or [0, 1] (max |delta| {dev:.6f})")

    def ratio(a: str, b: str) -> float:  # per repeat (same load), then the median
        return statistics.median(ta_ / tb_ for ta_, tb_ in zip(times[a], times[b]))

    ref = "floor" if "floor" in methods else "plain"
    rows = [("method", "robust acc", "median s", f"x {ref}", "x ours", "fwd/sample", "bwd/sample")]
    for m in methods:
        acc = f"{robust[m].float().mean() * 100:.1f}%" if m in robust else "-"
        rows.append(
            (
                labels[m],
                acc,
                f"{med[m]:.2f}",
                f"{ratio(m, ref):.2f}",
                f"{ratio(m, 'ours'):.2f}",
                f"{cost[m]['forward_per_sample']:.2f}",
                f"{cost[m]['backward_per_sample']:.2f}",
            )
        )
    _print_table(rows)
    summary = {
        "setting": name,
        "n": n,
        "eps": args.eps,
        "step": args.step,
        "steps": args.steps,
        "batch": args.batch,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "clean_accuracy": float(clean.float().mean()),
        "median_seconds": med,
        "times": times,
        f"ratio_to_{ref}": {m: ratio(m, ref) for m in methods},
        "ratio_to_ours": {m: ratio(m, "ours") for m in methods},
        "cost": cost,
        "robust_accuracy": {m: float(v.float().mean()) for m, v in robust.items()},
        "disagreements": {},
    }
    print(
        f"x {ref}, x ours: per-repeat time ratios, median over repeats; fwd/bwd per sample: "
        "forward and backward passes through the model per image"
    )
    print(
        f"speed-up of ours: {ratio('plain', 'ours'):.2f}x over the plain loop"
        + (
            f", {ratio('torchattacks', 'ours'):.2f}x over torchattacks (torchattacks/ours)"
            if "torchattacks" in med
            else ""
        )
    )
    diff = int((robust["ours"] != robust["plain"]).sum())
    summary["disagreements"]["plain"] = diff
    print(f"samples where ours and the plain loop disagree (robust or not): {diff} of {n}")
    if "torchattacks" in robust:
        # torchattacks judges the last iterate only; ours and the plain loop any iterate.
        # Where they differ, an earlier iterate fooled the model and the last did not.
        for a in ("ours", "plain"):
            weaker = int((robust[a] & ~robust["torchattacks"]).sum())
            stronger = int((~robust[a] & robust["torchattacks"]).sum())
            summary["disagreements"][f"{a}_robust_torchattacks_not"] = weaker
            summary[f"{a}_fooled_only_at_an_earlier_iterate"] = stronger
            print(
                f"{a} vs torchattacks: robust only under {a} {weaker}; fooled only under "
                f"{a} (an earlier iterate, not the last, fooled the model) {stronger}"
            )
    return summary


def _settings(args, log):
    if args.data == "digits":
        yield (
            "sklearn digits 8x8, small CNN (15 epochs, seed 0)",
            digits_setting(args.work_dir, log),
        )
        return
    kinds = ("natural", "robust") if args.model == "both" else (args.model,)
    for kind in kinds:
        label = (
            "Fashion-MNIST, reference small CNN (2 epochs, seed 0)"
            if kind == "natural"
            else "Fashion-MNIST, adversarially trained CNN (FGSM-RS eps 0.1, 3 epochs, "
            "20,000 images, seed 0)"
        )
        yield label, fashion_setting(args.work_dir, args.fashion_root, log, kind == "robust")


def main(argv=None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(f"# {msg}", flush=True)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    summaries = []
    for name, (model, (x_all, y_all)) in _settings(args, log):
        model = model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        n = min(args.samples, x_all.shape[0])
        x, y = x_all[:n].to(device).contiguous(), y_all[:n].to(device)
        summaries.append(run_setting(model, x, y, name, args, device, log))
        print()
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summaries, indent=2) + "\n")
    return 0 if not any(v for s in summaries for v in s["disagreements"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
