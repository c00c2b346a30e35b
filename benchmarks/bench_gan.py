"""Benchmark: the cached AdvGAN generator against PGD-40 on Fashion-MNIST.

Setting (see the reference figures of the project): the small CNN
(conv32-conv64-maxpool-fc128-fc10, Adam 1e-3, batch 128, 2 epochs, seed 0),
L-inf eps 0.1, evaluation on the first 1,000 test images, generator trained
on the 60,000 training images. Printed side by side:

* clean accuracy;
* PGD-40 (step 0.01, no random start): a plain loop without early stop, and
  the plugin's ``pgd`` (which stops attacking samples once they are fooled);
* GAN training: seconds and steps;
* the cached generator (loaded back from the cache, no PGD refinement):
  adversarial accuracy and seconds;
* the per-image speed ratio of PGD-40 (plain loop) to the generator.

Usage::

    python benchmarks/bench_gan.py --work-dir /tmp/advrobust-bench [--retrain] \
        [--device cuda] [--threads 2]

The trained CNN and the GAN cache live in ``--work-dir``; reruns load the CNN
and retrain the generator only with ``--retrain`` (otherwise a cached
generator is reused and its recorded training time is shown).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_pgd import plain_pgd  # noqa: E402
from fashion import DEFAULT_ROOT, load_split, trained_cnn  # noqa: E402

from pytest_advrobust.attacks import gan as gan_attack_mod  # noqa: E402
from pytest_advrobust.attacks.base import AttackConfig, AttackContext, perturbation_norms  # noqa: E402
from pytest_advrobust.attacks.gradient import pgd  # noqa: E402
from pytest_advrobust.cache import GanCache  # noqa: E402

EPS = 0.1
STEP = 0.01
STEPS = 40
BATCH = 250


def bench_gan_config(
    cfg: AttackConfig, n_train: int, max_seconds: float, max_steps: int, precision: str = "bf16"
):
    """The benchmark's GAN settings: the defaults with a longer budget."""
    base = gan_attack_mod.default_gan_config(cfg, n_train)
    return base.replace(
        max_steps=max_steps,
        max_seconds=max_seconds,
        eval_every=max(50, max_steps // 20),
        patience=max_steps,
        precision=precision,
    )


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def accuracy(model, x, y, device) -> float:
    with torch.no_grad():
        correct = 0
        for s in range(0, x.shape[0], BATCH):
            correct += int(
                (model(x[s : s + BATCH].to(device)).argmax(1).cpu() == y[s : s + BATCH]).sum()
            )
    return correct / x.shape[0]


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--work-dir", type=Path, required=True, help="folder for the CNN weights and the GAN cache"
    )
    p.add_argument(
        "--data-dir", type=Path, default=DEFAULT_ROOT, help="Fashion-MNIST IDX .gz folder"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 avoids oversubscription stalls on a busy machine)",
    )
    p.add_argument("--n-eval", type=int, default=1000, help="first N test images to evaluate on")
    p.add_argument("--gan-seconds", type=float, default=720.0, help="GAN training time budget (s)")
    p.add_argument("--gan-steps", type=int, default=2000, help="GAN training step budget")
    p.add_argument(
        "--precision",
        default="bf16",
        choices=("auto", "bf16", "fp32"),
        help="GAN training precision (bf16 is native on this benchmark's CPU)",
    )
    p.add_argument(
        "--plugin-defaults",
        action="store_true",
        help="train with exactly the plugin's default GAN settings (ignores --gan-steps, "
        "--gan-seconds and --precision)",
    )
    p.add_argument(
        "--retrain", action="store_true", help="train the generator even if it is cached"
    )
    p.add_argument(
        "--skip-pgd", action="store_true", help="skip both PGD runs (for quick GAN experiments)"
    )
    p.add_argument(
        "--json", type=Path, default=None, help="also write the numbers to this JSON file"
    )
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    x_train, y_train = load_split("train", args.data_dir)
    x_test, y_test = load_split("test", args.data_dir)
    x_eval, y_eval = x_test[: args.n_eval], y_test[: args.n_eval]

    model = trained_cnn(x_train, y_train, work).to(device).eval().requires_grad_(False)
    xe, ye = x_eval.to(device), y_eval.to(device)
    rows = {}
    rows["clean_accuracy"] = accuracy(model, x_eval, y_eval, device)

    cfg = AttackConfig(
        eps=EPS,
        norm="linf",
        steps=STEPS,
        step_size=STEP,
        random_start=False,
        bounds=(0.0, 1.0),
        seed=0,
        batch_size=BATCH,
    )
    if not args.skip_pgd:

        def run_plain():
            return torch.cat(
                [
                    plain_pgd(model, xe[s : s + BATCH], ye[s : s + BATCH], EPS, STEP, STEPS)
                    for s in range(0, xe.shape[0], BATCH)
                ]
            )

        adv, secs = timed(run_plain, device)
        rows["pgd40_plain"] = {
            "adversarial_accuracy": accuracy(model, adv.cpu(), y_eval, device),
            "seconds": secs,
        }
        adv, secs = timed(lambda: pgd(model, xe, ye, cfg, AttackContext(device=device)), device)
        rows["pgd40_ours"] = {
            "adversarial_accuracy": accuracy(model, adv.cpu(), y_eval, device),
            "seconds": secs,
        }

    # GAN: train (or reuse) through the cache, then load it back as a fresh process would.
    cache_dir = work / "gan-cache"
    if args.plugin_defaults:
        gcfg = gan_attack_mod.default_gan_config(cfg, x_train.shape[0])
    else:
        gcfg = bench_gan_config(
            cfg, x_train.shape[0], args.gan_seconds, args.gan_steps, args.precision
        )
    ctx = AttackContext(
        device=device,
        train_x=x_train,
        train_y=y_train,
        cache_dir=cache_dir,
        retrain=args.retrain,
        progress=lambda s: print(s, flush=True),
    )
    _, facts = gan_attack_mod.obtain_generator(model, cfg, ctx, gan_cfg=gcfg)
    meta = GanCache(cache_dir).load(facts["key"])[1]
    rows["gan_training"] = {
        "mode": facts["mode"],
        "steps": meta["steps"],
        "seconds": meta["seconds"],
        "device": meta["device"],
        "holdout_success": meta["holdout_success"],
        "settings": gcfg.to_dict(),
    }
    gan_attack_mod.clear_memo()
    (gen, hit), load_secs = timed(
        lambda: gan_attack_mod.obtain_generator(
            model,
            cfg,
            AttackContext(device=device, train_x=x_train, train_y=y_train, cache_dir=cache_dir),
            gan_cfg=gcfg,
        ),
        device,
    )
    assert hit["mode"] == "cached" and hit["steps"] == 0, hit

    def generate():
        with torch.no_grad():
            return torch.cat([gen(xe[s : s + BATCH]) for s in range(0, xe.shape[0], BATCH)])

    generate()  # warm-up (allocator, kernels)
    gen_secs = []
    for _ in range(5):
        adv, secs = timed(generate, device)
        gen_secs.append(secs)
    gen_secs.sort()
    worst = float(perturbation_norms(xe, adv, "linf").max())
    assert worst <= EPS + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    rows["gan_cached"] = {
        "adversarial_accuracy": accuracy(model, adv.cpu(), y_eval, device),
        "seconds": gen_secs[len(gen_secs) // 2],
        "load_seconds": load_secs,
        "max_linf": worst,
    }

    n = xe.shape[0]
    print()
    print(
        f"Fashion-MNIST, small CNN, L-inf eps {EPS}, first {n} test images, device {device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"{'what':44s} {'accuracy':>9s} {'seconds':>9s} {'ms/image':>9s}")
    print(f"{'clean':44s} {rows['clean_accuracy']:9.1%}")
    for name, label in (
        ("pgd40_plain", "PGD-40, plain loop (no early stop)"),
        ("pgd40_ours", "PGD-40, attacks.gradient.pgd (early stop)"),
    ):
        if name in rows:
            r = rows[name]
            print(
                f"{label:44s} {r['adversarial_accuracy']:9.1%} {r['seconds']:9.2f} "
                f"{1000 * r['seconds'] / n:9.3f}"
            )
    t = rows["gan_training"]
    print(
        f"{'GAN training (' + t['device'] + ', ' + str(t['steps']) + ' steps)':44s} "
        f"{'':9s} {t['seconds']:9.1f}   held-out success {t['holdout_success']:.3f}"
        + ("  [reused from cache]" if t["mode"] == "cached" else "")
    )
    g = rows["gan_cached"]
    print(
        f"{'cached generator (median of 5, no refine)':44s} {g['adversarial_accuracy']:9.1%} "
        f"{g['seconds']:9.3f} {1000 * g['seconds'] / n:9.3f}"
    )
    if "pgd40_plain" in rows:
        ratio = rows["pgd40_plain"]["seconds"] / g["seconds"]
        rows["speed_ratio_pgd40_over_generator"] = ratio
        gap = g["adversarial_accuracy"] - rows["pgd40_plain"]["adversarial_accuracy"]
        rows["accuracy_gap_points"] = 100 * gap
        print(f"per-image speed ratio PGD-40 / generator: {ratio:.1f}x (target >= 25x)")
        print(
            f"generator minus PGD-40 adversarial accuracy: {100 * gap:+.1f} points (target <= +3.0)"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
