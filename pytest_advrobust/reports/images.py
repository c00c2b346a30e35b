"""PNG reports: galleries of adversarial examples and robustness curves.

:func:`save_gallery` draws three rows, one column per sample:

1. the clean input, captioned ``y=<label> p=<clean prediction>``;
2. the adversarial input, captioned ``p=<adversarial prediction>``;
3. the perturbation ``x_adv - x``, amplified to fill [0, 1] around a mid-grey
   of 0.5, captioned with its L-inf size.

Captions are green when the prediction is right and red when it is wrong. An
optional title band on top names the test, the attack and eps;
:func:`pick_samples` chooses which samples to show (those the attack turned
first). How each batch shape becomes cells of pixels (images, grey images, squares
or bar strips of flat vectors) is in :mod:`.image_cells`.

:func:`save_curve` plots adversarial accuracy (and the gap) against eps with
matplotlib, the optional ``images`` extra.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

from ..errors import MissingPackage
from ..geometry import perturbation_norms
from .image_cells import (
    MAX_BARS,
    MIN_CELL,
    STRIP_HEIGHT,
    cell_size,
    row_images,
    strip_shape,
    upscale,
)

__all__ = [
    "MAX_BARS",
    "MIN_CELL",
    "PADDING",
    "STRIP_HEIGHT",
    "TEXT_HEIGHT",
    "TITLE_HEIGHT",
    "caption_lines",
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

#: Pixels between cells (and around the grid) of each row, as in ``make_grid``.
PADDING = 2
#: Height of one line of the caption band under each row (captions never get cut: a long
#: class name takes more lines).
TEXT_HEIGHT = 14
#: Height of the title band drawn on top when a gallery has a title.
TITLE_HEIGHT = 16
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


def caption_lines(draw, text: str, font, width: int) -> list:
    """``text`` in lines no wider than ``width`` pixels, nothing cut: broken after spaces
    where it can be, else between characters. ``"".join`` of the lines, with the
    spaces they were broken at, gives ``text`` back."""
    lines: list = []
    line = ""
    for word in text.split(" "):
        trial = f"{line} {word}" if line else word
        if draw.textlength(trial, font=font) <= width:
            line = trial
            continue
        if line:
            lines.append(line)
        line = ""
        for ch in word:
            if line and draw.textlength(line + ch, font=font) > width:
                lines.append(line)
                line = ""
            line += ch
    lines.append(line)
    return lines


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


def save_gallery(path, *args, **kwargs) -> Path:
    """Write ``gallery_image(*args, **kwargs)`` as a PNG to ``path`` and return the path."""
    canvas = gallery_image(*args, **kwargs)
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


def _batch_pair(x, x_adv, max_images: int):
    """The first ``max_images`` samples of ``x`` and ``x_adv``: float32 on the CPU."""
    import torch

    x = torch.as_tensor(x).detach().to("cpu", torch.float32)
    x_adv = torch.as_tensor(x_adv).detach().to("cpu", torch.float32)
    if x.shape != x_adv.shape:
        raise ValueError(
            f"x and x_adv must have the same shape; got {tuple(x.shape)} and {tuple(x_adv.shape)}"
        )
    if max_images < 1:
        raise ValueError(f"max_images must be at least 1, got {max_images!r}")
    n = min(int(max_images), int(x.shape[0]))
    if n == 0:
        raise ValueError("cannot draw a gallery of an empty batch")
    return x[:n], x_adv[:n]


def _captions(x, x_adv, given, class_names) -> list:
    """Per row, the (text, colour) caption of each sample; ``given``: the true labels and
    the clean and adversarial predictions."""
    import torch

    n = x.shape[0]
    labels, p_clean, p_adv = (
        torch.as_tensor(v).detach().cpu().reshape(-1)[:n].tolist() for v in given
    )

    def name(value: int) -> str:
        return _name(value, class_names)

    def verdict(p: int, label: int) -> tuple:
        return _RIGHT if p == label else _WRONG

    return [
        [(f"y={name(a)} p={name(p)}", verdict(p, a)) for a, p in zip(labels, p_clean)],
        [(f"p={name(p)}", verdict(p, a)) for a, p in zip(labels, p_adv)],
        [(f"|d|={v:.3g}", _NEUTRAL) for v in perturbation_norms(x, x_adv, "linf").tolist()],
    ]


def _compose(rows: list, captions: list, cell_width: int, title: Optional[str]):
    """Stack the row grids, each over its caption band (tall enough for the longest
    caption of the row, whole), under an optional title band."""
    import torch
    from PIL import Image, ImageDraw, ImageFont

    row_h, width = rows[0].shape[1], rows[0].shape[2]
    head = TITLE_HEIGHT if title else 0
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [[caption_lines(draw, t, font, cell_width - 2) for t, _ in rc] for rc in captions]
    bands = [TEXT_HEIGHT * max([len(lines) for lines in row] or [1]) for row in wrapped]
    canvas = Image.new("RGB", (width, head + 3 * row_h + sum(bands)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        fitted = _fit(draw, title, font, width - 2 * PADDING - 2)
        draw.text((PADDING + 1, 2), fitted, fill=(0, 0, 0), font=font)
    top = head
    for grid, row_captions, row_lines, band in zip(rows, captions, wrapped, bands):
        arr = grid.permute(1, 2, 0).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()
        canvas.paste(Image.fromarray(arr), (0, top))
        for i, ((_, color), lines) in enumerate(zip(row_captions, row_lines)):
            left = PADDING + i * (cell_width + PADDING) + 1
            for k, line in enumerate(lines):
                draw.text((left, top + row_h + k * TEXT_HEIGHT), line, fill=color, font=font)
        top += row_h + band
    return canvas


def gallery_image(
    x,
    x_adv,
    labels: Tuple[Any, Any, Any],
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

    Shape:
        - x, x_adv: (N, C, H, W), (N, H, W) or (N, D), any float dtype and device.
        - labels: ``(y, pred_clean, pred_adv)``, the true labels and the model's
          predictions on ``x`` and ``x_adv``, each (N,) integer labels.

    Raises:
        ValueError: ``x`` and ``x_adv`` differ in shape, the batch is empty,
            ``max_images`` is below 1, or ``x`` has another number of dimensions.
    """
    from torchvision.utils import make_grid

    x, x_adv = _batch_pair(x, x_adv, max_images)
    n = x.shape[0]
    imgs = row_images(x, x_adv, amplify)
    rows = [make_grid(upscale(t.clamp(0, 1)), nrow=n, padding=PADDING, pad_value=1.0) for t in imgs]
    captions = _captions(x, x_adv, labels, class_names)
    return _compose(rows, captions, cell_size(*imgs[0].shape[-2:])[1], title)


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


def _plot_accuracy(ax, eps: list, points: list) -> None:
    """The adversarial accuracy line, with its 95% band when every point has one."""
    acc = [float(p["adversarial_accuracy"]) for p in points]
    ax.plot(eps, acc, marker="o", color="tab:blue", label="adversarial accuracy")
    cis = [p.get("adversarial_ci") for p in points]
    if all(ci is not None and len(ci) == 2 for ci in cis):
        lo, hi = [float(c[0]) for c in cis], [float(c[1]) for c in cis]
        ax.fill_between(eps, lo, hi, color="tab:blue", alpha=0.2, label="95% interval")


def _plot_gap(ax, eps: list, points: list, threshold: Optional[float]) -> None:
    """The gap line and threshold; judged points ringed (when some are not), failed ones
    crossed."""
    gaps = [None if p.get("gap") is None else float(p["gap"]) for p in points]
    has_gap = all(g is not None for g in gaps)
    if has_gap:
        ax.plot(eps, gaps, marker="s", color="tab:orange", label="gap")
    if threshold is not None:
        ax.axhline(float(threshold), color="tab:red", linestyle="--", label="gap threshold")
    if not has_gap:
        return
    judged = [p.get("judged", True) is not False for p in points]
    if not all(judged):
        e, g = [e for e, j in zip(eps, judged) if j], [g for g, j in zip(gaps, judged) if j]
        ring = dict(s=160, facecolors="none", edgecolors="black", zorder=3)
        ax.scatter(e, g, label="judged eps", **ring)
    failed = [j and p.get("passed") is False for p, j in zip(points, judged)]
    if any(failed):
        e, g = [e for e, f in zip(eps, failed) if f], [g for g, f in zip(gaps, failed) if f]
        ax.scatter(e, g, marker="x", color="tab:red", s=60, zorder=4, label="gap over threshold")


def curve_figure(curve: Sequence[dict], *, threshold: Optional[float] = None, title: str = ""):
    """A matplotlib figure of an eps sweep: accuracy and gap against eps.

    ``curve`` holds dicts with ``eps`` and ``adversarial_accuracy`` and
    optionally ``adversarial_ci`` ([lo, hi], drawn as a band), ``gap``,
    ``judged`` (whether the threshold applies at this eps; default: yes) and
    ``passed``. ``threshold`` is the gap threshold, drawn as a dashed line on
    the gap's scale. Judged points are ringed; a judged point whose gap is over
    the threshold is marked with a red cross on the gap curve. Points that
    were not judged are never marked. The figure uses the Agg canvas directly
    and never touches pyplot's global state. Raises :class:`MissingPackage`
    without matplotlib and ValueError for an empty ``curve``.
    """
    Figure, FigureCanvasAgg = _matplotlib()
    if not curve:
        raise ValueError("curve must hold at least one point, got none")
    points = sorted(curve, key=lambda p: float(p["eps"]))
    eps = [float(p["eps"]) for p in points]
    fig = Figure(figsize=(5.0, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    _plot_accuracy(ax, eps, points)
    _plot_gap(ax, eps, points, threshold)
    ax.set(xlabel="eps", ylabel="accuracy / gap", ylim=(-0.02, 1.02))
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize="small")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig
