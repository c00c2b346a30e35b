"""The pictures of one robust test: its gallery and, for sweeps, its curve.

Shared by ``--advrobust-images`` (PNG files) and the pytest-html report
(embedded PNGs), so that both show the same samples under the same title.
A missing optional package (matplotlib, for curves) costs the picture, never
the verdict: callers get :class:`~pytest_advrobust.errors.MissingPackage`
once and go on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..errors import MissingPackage

__all__ = [
    "GALLERY_SAMPLES",
    "NEWLY_FOOLED_SAMPLES",
    "curve_of",
    "gallery_of",
    "gallery_title",
    "newly_fooled_of",
    "newly_fooled_rows",
    "write_pictures",
]

#: Samples (columns) in a gallery.
GALLERY_SAMPLES = 8
#: Most samples (columns) in the gallery of the samples newly fooled since the baseline.
NEWLY_FOOLED_SAMPLES = 16


def gallery_title(nodeid: str, rep: Dict[str, Any]) -> str:
    """``<test> | <attack> <norm> eps=<eps> | <k> of <m> correct samples turned``."""
    turned = rep.get("_turned")
    tail = f" | {turned[0]} of {turned[1]} correct samples turned" if turned else ""
    return f"{nodeid} | {rep['attack']} {rep['norm']} eps={rep['eps']:g}{tail}"


def gallery_of(nodeid: str, outcome: Any, rep: Dict[str, Any]):
    """A PIL image: the samples the attack turned first (then those that resisted),
    with class names from the data when it has them, titled with test, attack, eps.
    Under ``attack="generated"``: the accepted generated samples the model got
    wrong, or ``None`` when it got every one right."""
    from .images import pick_samples
    from .layout import channels_first

    if outcome.generated is not None:
        from .generated_gallery import wrong_gallery_image

        return wrong_gallery_image(
            channels_first(outcome.x_adv, outcome.settings),
            outcome.y_adv,
            outcome.adv.pred,
            outcome.settings.bounds,
        )

    clean_ok, adv_ok = outcome.clean.correct, outcome.adv.correct
    idx = pick_samples(clean_ok, adv_ok, GALLERY_SAMPLES)
    turned = int((clean_ok & ~adv_ok).sum())
    title = gallery_title(nodeid, dict(rep, _turned=(turned, int(clean_ok.sum()))))
    return _gallery_of_rows(outcome, idx, title, GALLERY_SAMPLES)


def _gallery_of_rows(outcome: Any, rows, title: str, max_images: int):
    """The gallery of ``outcome``'s samples at ``rows``: clean, adversarial, perturbation."""
    from .images import gallery_image
    from .layout import channels_first

    x, x_adv = (channels_first(t, outcome.settings) for t in (outcome.x, outcome.x_adv))
    labels = (outcome.y[rows], outcome.clean.pred[rows], outcome.adv.pred[rows])
    return gallery_image(
        x[rows],
        x_adv[rows],
        labels,
        class_names=outcome.class_names,
        title=title,
        max_images=max_images,
    )


def newly_fooled_rows(outcome: Any, rep: Dict[str, Any]) -> List[int]:
    """Rows of ``outcome`` (evaluation order) holding the samples the baseline comparison
    found newly fooled; empty without a paired comparison."""
    paired = (rep.get("baseline") or {}).get("paired")
    if not isinstance(paired, dict) or outcome.indices is None:
        return []
    wanted = {int(s["index"]) for s in paired.get("newly_fooled_samples") or ()}
    return [row for row, index in enumerate(outcome.indices.tolist()) if index in wanted]


def newly_fooled_of(nodeid: str, outcome: Any, rep: Dict[str, Any]):
    """A PIL image of the samples robust in the baseline and fooled now (clean,
    adversarial, amplified perturbation, with labels and predictions), in the order the
    failure message lists their ids; ``None`` when there are none."""

    rows = newly_fooled_rows(outcome, rep)
    if not rows:
        return None
    shown = rows[:NEWLY_FOOLED_SAMPLES]
    paired = rep["baseline"]["paired"]
    more = f", first {len(shown)} shown" if len(shown) < len(rows) else ""
    title = (
        f"newly fooled since the baseline: {len(rows)} of {paired['shared']} shared "
        f"samples{more} | {nodeid}"
    )
    return _gallery_of_rows(outcome, shown, title, len(shown))


def curve_of(nodeid: str, rep: Dict[str, Any]):
    """The matplotlib figure of a sweep's curve, or ``None`` for a single eps.

    Raises :class:`MissingPackage` without matplotlib."""
    from .images import curve_figure

    if not rep.get("curve"):
        return None
    return curve_figure(rep["curve"], threshold=rep["threshold"], title=nodeid)


def write_pictures(
    folder: Path,
    nodeid: str,
    outcome: Any,
    rep: Dict[str, Any],
    missing: Callable[[MissingPackage], None],
) -> List[str]:
    """Write ``<stem>.png`` (and ``<stem>-newly-fooled.png``, the samples newly fooled since
    the baseline, and ``<stem>-curve.png``) into ``folder``; return the paths.

    A curve that needs a missing package is left out and ``missing`` is told."""
    from .images import safe_filename

    stem = safe_filename(nodeid)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    gallery = gallery_of(nodeid, outcome, rep)
    if gallery is not None:
        suffix = "-generated-wrong" if outcome.generated is not None else ""
        path = folder / f"{stem}{suffix}.png"
        gallery.save(path, format="PNG")
        paths.append(str(path))
    fooled = None if outcome.generated is not None else newly_fooled_of(nodeid, outcome, rep)
    if fooled is not None:
        path = folder / f"{stem}-newly-fooled.png"
        fooled.save(path, format="PNG")
        paths.append(str(path))
    fig = _curve_or_none(nodeid, rep, missing)
    if fig is not None:
        curve_path = folder / f"{stem}-curve.png"
        fig.savefig(curve_path, format="png")
        paths.append(str(curve_path))
    return paths


def _curve_or_none(
    nodeid: str, rep: Dict[str, Any], missing: Callable[[MissingPackage], None]
) -> Optional[Any]:
    try:
        return curve_of(nodeid, rep)
    except MissingPackage as exc:
        missing(exc)
        return None
