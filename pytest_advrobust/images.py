"""PNG reports: galleries of adversarial examples and robustness curves.

:func:`save_gallery` draws three rows, one column per sample:

1. the clean input, captioned ``y=<label> p=<clean prediction>``;
2. the adversarial input, captioned ``p=<adversarial prediction>``;
3. the perturbation ``x_adv - x``, amplified to fill [0, 1] around a mid-grey
   of 0.5, captioned with its L-inf size.

Captions are green when the prediction is right and red when it is wrong. An
optional title band on top names the test, the attack and eps;
:func:`pick_samples` chooses which samples to show (those the attack turned
first).
Images (N, C, H, W) with 1 or 3 channels are drawn as they are (other channel
counts: the first three, or their mean), (N, H, W) as grey images, flat
(N, D) vectors as a square image when D is a perfect square and otherwise as a
strip of bars, one per feature (the perturbation's bars start at the middle).
Small images are enlarged with nearest-neighbour scaling so that a cell is at
least :data:`MIN_CELL` pixels on its shorter side.

:func:`save_curve` plots adversarial accuracy (and the gap) against eps with
matplotlib, the optional ``images`` extra.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Optional, Sequence

from .errors import MissingPackage

__all__ = [
    "MAX_BARS",
    "MIN_CELL",
    "PADDING",
    "STRIP_HEIGHT",
    "TEXT_HEIGHT",
    "TITLE_HEIGHT",
    "cell_size",
    "curve_figure",
    "gallery_image",
    "pick_samples",
    "png_bytes",
    "safe_filename",
    "save_curve",
    "save_gallery",
    "strip_shape",
]

#: Shorter side, in pixels, that each cell is enlarged to at least.
MIN_CELL = 64
#: Pixels between cells (and around the grid) of each row, as in ``make_grid``.
PADDING = 2
#: Height of the caption band under each row.
TEXT_HEIGHT = 14
#: Height of the title band drawn on top when a gallery has a title.
TITLE_HEIGHT = 16
#: Height of the bar strip drawn for flat non-square vectors.
STRIP_HEIGHT = 64
#: Most bars in a strip; longer vectors are averaged into this many bins.
MAX_BARS = 256
#: Longest file stem :func:`safe_filename` returns.
MAX_STEM = 96

_RIGHT = (0, 128, 0)
_WRONG = (200, 0, 0)
_NEUTRAL = (60, 60, 60)


def safe_filename(nodeid: str) -> str:
    """A file stem for a test node id: letters, digits, ``-``, ``_`` and ``.``.

    Every other run of characters (path separators, ``::``, brackets, spaces)
    becomes one ``_``; leading and trailing dots and underscores are dropped.
    Stems longer than :data:`MAX_STEM` are cut and end in ``-`` plus eight hex
    digits of the node id's SHA-1, so different long ids stay distinct.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(nodeid))
    stem = re.sub(r"\.{2,}", ".", stem).strip("._") or "test"
    if len(stem) > MAX_STEM:
        digest = hashlib.sha1(str(nodeid).encode("utf-8")).hexdigest()[:8]
        stem = stem[: MAX_STEM - 9].rstrip("._") + "-" + digest
    return stem


# ------------------------------------------------------------------- gallery


def _as_images(t, name: str):
    """(N, ...) tensor -> float (N, C, H, W) on the CPU with C in {1, 3}."""
    import torch

    t = torch.as_tensor(t).detach().to("cpu", torch.float32)
    if t.dim() == 4:
        c = t.shape[1]
        if c == 1 or c == 3:
            return t
        if c > 3:
            return t[:, :3]
        return t.mean(dim=1, keepdim=True)
    if t.dim() == 3:
        return t.unsqueeze(1)
    if t.dim() == 2:
        d = t.shape[1]
        side = math.isqrt(d)
        if side * side == d:
            return t.reshape(t.shape[0], 1, side, side)
        return None  # drawn as bars after scaling to [0, 1]
    raise ValueError(
        f"{name} must be (N, C, H, W), (N, H, W) or (N, D); got shape {tuple(t.shape)}"
    )


def strip_shape(d: int) -> tuple:
    """(height, width) of the bar strip drawn for a flat vector of ``d`` features."""
    bars = min(int(d), MAX_BARS)
    return STRIP_HEIGHT, bars * max(1, math.ceil(MIN_CELL / max(bars, 1)))


def _bars(values, centre: float = 0.0):
    """(N, D) values in [0, 1] -> (N, 1, h, w) strips of dark bars on white.

    Each feature is one bar reaching from ``centre`` (0: the bottom, 0.5: the
    middle) to its value. More than :data:`MAX_BARS` features are averaged
    into that many bins.
    """
    import torch
    import torch.nn.functional as F

    n, d = values.shape
    if d > MAX_BARS:
        values = F.adaptive_avg_pool1d(values.unsqueeze(1), MAX_BARS).squeeze(1)
        d = MAX_BARS
    h, w = strip_shape(d)
    tops = values.clamp(0, 1) * h  # (N, D) in pixel units from the bottom
    lo = torch.minimum(tops, torch.full_like(tops, centre * h)).unsqueeze(1)
    hi = torch.maximum(tops, torch.full_like(tops, centre * h)).unsqueeze(1)
    mid = (torch.arange(h, 0, -1, dtype=values.dtype) - 0.5).view(1, h, 1)  # pixel centres
    filled = (mid >= lo) & (mid <= hi)
    img = torch.where(
        filled, torch.tensor(0.2, dtype=values.dtype), torch.tensor(1.0, dtype=values.dtype)
    )
    img = img.repeat_interleave(w // d, dim=2)
    return img.unsqueeze(1)


def _display_range(clean, adv):
    """Map values to [0, 1] jointly for both rows: as is when already inside, else min-max."""
    lo = float(min(clean.min(), adv.min()))
    hi = float(max(clean.max(), adv.max()))
    if lo >= 0.0 and hi <= 1.0:
        return clean, adv
    span = hi - lo if hi > lo else 1.0
    return (clean - lo) / span, (adv - lo) / span


def _perturbation_image(delta, amplify: Optional[float]):
    """delta -> [0, 1] centred at 0.5; per-sample scaling to fill the range unless ``amplify``."""
    flat = delta.reshape(delta.shape[0], -1)
    if amplify is None:
        peak = flat.abs().amax(dim=1).clamp_min(1e-12)
        scale = (0.5 / peak).view(-1, *([1] * (delta.dim() - 1)))
    else:
        scale = float(amplify)
    return (0.5 + delta * scale).clamp(0.0, 1.0)


def cell_size(h: int, w: int) -> tuple:
    """Size (height, width) of one cell for an (h, w) image after enlarging."""
    factor = max(1, math.ceil(MIN_CELL / max(1, min(h, w))))
    return h * factor, w * factor


def _upscale(imgs):
    import torch.nn.functional as F

    h, w = imgs.shape[-2:]
    ch, cw = cell_size(h, w)
    if (ch, cw) == (h, w):
        return imgs
    return F.interpolate(imgs, size=(ch, cw), mode="nearest")


def _name(value: int, class_names) -> str:
    if class_names is not None:
        try:
            return str(class_names[value])
        except (IndexError, KeyError, TypeError):
            pass
    return str(value)


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "~", font=font) > width:
        text = text[:-1]
    return text + "~"


def pick_samples(clean_correct, adv_correct, k: int = 8) -> list:
    """Indices of up to ``k`` samples worth showing, in this order of preference.

    First the samples the attack turned (right without the attack, wrong with
    it), then those that resisted (right both times); samples the model gets
    wrong before any attack come last, only when nothing else is left. Each
    group keeps the batch order. Inputs are boolean (N,) tensors or lists.
    """
    clean = [bool(v) for v in clean_correct]
    adv = [bool(v) for v in adv_correct]
    turned = [i for i, (c, a) in enumerate(zip(clean, adv)) if c and not a]
    resisted = [i for i, (c, a) in enumerate(zip(clean, adv)) if c and a]
    wrong = [i for i, c in enumerate(clean) if not c]
    return (turned + resisted + wrong)[: max(0, int(k))]


def save_gallery(
    path,
    x,
    x_adv,
    y,
    pred_clean,
    pred_adv,
    *,
    max_images: int = 8,
    amplify: Optional[float] = None,
    class_names: Optional[Sequence] = None,
    title: Optional[str] = None,
) -> Path:
    """Write :func:`gallery_image` as a PNG to ``path`` and return the path."""
    canvas = gallery_image(
        x,
        x_adv,
        y,
        pred_clean,
        pred_adv,
        max_images=max_images,
        amplify=amplify,
        class_names=class_names,
        title=title,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path


def png_bytes(picture) -> bytes:
    """The PNG bytes of a PIL image or a matplotlib figure (from :func:`curve_figure`)."""
    import io

    buf = io.BytesIO()
    if hasattr(picture, "savefig"):
        picture.savefig(buf, format="png")
    else:
        picture.save(buf, format="PNG")
    return buf.getvalue()


def gallery_image(
    x,
    x_adv,
    y,
    pred_clean,
    pred_adv,
    *,
    max_images: int = 8,
    amplify: Optional[float] = None,
    class_names: Optional[Sequence] = None,
    title: Optional[str] = None,
):
    """A PIL image of clean, adversarial and amplified-perturbation images.

    One column per sample (the first ``max_images``; choose them with
    :func:`pick_samples`); three rows as described in the module docstring,
    each followed by a caption band, under a title band of
    :data:`TITLE_HEIGHT` pixels when ``title`` is given. ``amplify`` fixes the
    perturbation's scale factor (default: each perturbation is stretched to
    fill [0, 1]). ``class_names`` maps labels to names for the captions.
    """
    import torch
    from PIL import Image, ImageDraw, ImageFont
    from torchvision.utils import make_grid

    x = torch.as_tensor(x).detach().to("cpu", torch.float32)
    x_adv = torch.as_tensor(x_adv).detach().to("cpu", torch.float32)
    if x.shape != x_adv.shape:
        raise ValueError(
            f"x and x_adv must have the same shape; got {tuple(x.shape)} and {tuple(x_adv.shape)}"
        )
    if max_images < 1:
        raise ValueError("max_images must be at least 1")
    n = min(int(max_images), int(x.shape[0]))
    if n == 0:
        raise ValueError("cannot draw a gallery of an empty batch")
    x, x_adv = x[:n], x_adv[:n]
    labels = torch.as_tensor(y).detach().cpu().reshape(-1)[:n].tolist()
    p_clean = torch.as_tensor(pred_clean).detach().cpu().reshape(-1)[:n].tolist()
    p_adv = torch.as_tensor(pred_adv).detach().cpu().reshape(-1)[:n].tolist()

    delta = x_adv - x
    linf = delta.reshape(n, -1).abs().amax(dim=1).tolist()
    clean_img, adv_img = _as_images(x, "x"), _as_images(x_adv, "x_adv")
    if clean_img is None:  # flat, non-square: bars of the scaled values
        c, a = _display_range(x, x_adv)
        clean_img, adv_img = _bars(c), _bars(a)
        delta_img = _bars(_perturbation_image(delta, amplify), centre=0.5)
    else:
        clean_img, adv_img = _display_range(clean_img, adv_img)
        delta_img = _perturbation_image(_as_images(delta, "x_adv - x"), amplify)

    rows = []
    for imgs in (clean_img, adv_img, delta_img):
        grid = make_grid(_upscale(imgs.clamp(0, 1)), nrow=n, padding=PADDING, pad_value=1.0)
        rows.append(grid)
    ch, cw = cell_size(*clean_img.shape[-2:])
    row_h = rows[0].shape[1]
    width = rows[0].shape[2]
    head = TITLE_HEIGHT if title else 0
    height = head + 3 * (row_h + TEXT_HEIGHT)

    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if title:
        draw.text(
            (PADDING + 1, 2),
            _fit(draw, title, font, width - 2 * PADDING - 2),
            fill=(0, 0, 0),
            font=font,
        )
    for r, grid in enumerate(rows):
        arr = grid.permute(1, 2, 0).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()
        top = head + r * (row_h + TEXT_HEIGHT)
        canvas.paste(Image.fromarray(arr), (0, top))
        for i in range(n):
            if r == 0:
                text = f"y={_name(labels[i], class_names)} p={_name(p_clean[i], class_names)}"
                color = _RIGHT if p_clean[i] == labels[i] else _WRONG
            elif r == 1:
                text = f"p={_name(p_adv[i], class_names)}"
                color = _RIGHT if p_adv[i] == labels[i] else _WRONG
            else:
                text = f"|d|={linf[i]:.3g}"
                color = _NEUTRAL
            left = PADDING + i * (cw + PADDING)
            draw.text(
                (left + 1, top + row_h), _fit(draw, text, font, cw - 2), fill=color, font=font
            )
    return canvas


# --------------------------------------------------------------------- curve


def _matplotlib():
    try:
        import matplotlib  # noqa: F401  (fails first when matplotlib is missing)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingPackage(
            "Drawing robustness curves needs matplotlib; install it with "
            "`pip install pytest-advrobust[images]`."
        ) from None
    return Figure, FigureCanvasAgg


def save_curve(
    path, curve: Sequence[dict], *, threshold: Optional[float] = None, title: str = ""
) -> Path:
    """Plot an eps sweep (:func:`curve_figure`) to a PNG and return its path."""
    fig = curve_figure(curve, threshold=threshold, title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def curve_figure(curve: Sequence[dict], *, threshold: Optional[float] = None, title: str = ""):
    """A matplotlib figure of an eps sweep: accuracy and gap against eps.

    ``curve`` holds dicts with ``eps`` and ``adversarial_accuracy`` and
    optionally ``adversarial_ci`` ([lo, hi], drawn as a band), ``gap``,
    ``judged`` (whether the threshold applies at this eps; default: yes) and
    ``passed``. ``threshold`` is the gap threshold, drawn as a dashed line on
    the gap's scale. Judged points are ringed; a judged point whose gap is over
    the threshold is marked with a red cross on the gap curve. Points that
    were not judged are never marked. The figure uses the Agg canvas directly
    and never touches pyplot's global state.
    """
    Figure, FigureCanvasAgg = _matplotlib()
    if not curve:
        raise ValueError("cannot plot an empty curve")
    points = sorted(curve, key=lambda p: float(p["eps"]))
    eps = [float(p["eps"]) for p in points]
    acc = [float(p["adversarial_accuracy"]) for p in points]
    gaps = [None if p.get("gap") is None else float(p["gap"]) for p in points]

    fig = Figure(figsize=(5.0, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(eps, acc, marker="o", color="tab:blue", label="adversarial accuracy")
    cis = [p.get("adversarial_ci") for p in points]
    if all(ci is not None and len(ci) == 2 for ci in cis):
        ax.fill_between(
            eps,
            [float(c[0]) for c in cis],
            [float(c[1]) for c in cis],
            color="tab:blue",
            alpha=0.2,
            label="95% interval",
        )
    has_gap = all(g is not None for g in gaps)
    if has_gap:
        ax.plot(eps, gaps, marker="s", color="tab:orange", label="gap")
    if threshold is not None:
        ax.axhline(float(threshold), color="tab:red", linestyle="--", label="gap threshold")
    judged = [p.get("judged", True) is not False for p in points]
    if has_gap and not all(judged):
        ax.scatter(
            [e for e, j in zip(eps, judged) if j],
            [g for g, j in zip(gaps, judged) if j],
            s=160,
            facecolors="none",
            edgecolors="black",
            zorder=3,
            label="judged eps",
        )
    failed = [
        (e, g)
        for e, g, p, j in zip(eps, gaps, points, judged)
        if j and p.get("passed") is False and g is not None
    ]
    if failed:
        ax.scatter(
            [e for e, _ in failed],
            [g for _, g in failed],
            marker="x",
            color="tab:red",
            s=60,
            zorder=4,
            label="gap over threshold",
        )
    ax.set_xlabel("eps")
    ax.set_ylabel("accuracy / gap")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize="small")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig
