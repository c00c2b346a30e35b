"""A real browser renders the pytest-html report of examples/digits with its gallery.

Headless Chromium (Debian's ``chromium`` package) takes a screenshot of the
self-contained HTML report; the gallery PNG embedded in the report must be
found, pixel for pixel, in the screenshot. For a failing compare, the row also
shows the samples that changed (counts, interval, p-value, ids: read from the DOM
Chromium renders) and the gallery of the newly fooled samples. Skips where
Chromium, pytest-html or scikit-learn is missing.
"""

from __future__ import annotations

import base64
import html as html_lib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")
pytest.importorskip("pytest_html")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
)


def rendered_dom(html: Path) -> str:
    """The document as Chromium has built it, after pytest-html's scripts ran."""
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            html.resolve().as_uri() + "?collapsed=",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout


def screenshot(html: Path, png: Path, width: int = 1100, height: int = 1300) -> None:
    """Render ``html`` with every row expanded (pytest-html's ``?collapsed=``)."""
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            html.resolve().as_uri() + "?collapsed=",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def find(haystack: np.ndarray, needle: np.ndarray):
    """(top, left) where ``needle`` occurs in ``haystack`` (within 2 levels), or None."""
    h, w = needle.shape[:2]
    ys, xs = np.nonzero(np.all(np.abs(haystack - needle[0, 0]) <= 2, axis=2))
    for y, x in zip(ys, xs):
        part = haystack[y : y + h, x : x + w]
        if part.shape == needle.shape and np.abs(part - needle).max() <= 2:
            return int(y), int(x)
    return None


NO_CHROMIUM = "Chromium is not installed (apt-get install chromium) to render the HTML report"


def digits_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``test_survives_pgd`` of examples/digits on 200 samples, with ``args``."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "examples/digits",
            "--advrobust",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "-k",
            "test_survives_pgd",
            "--advrobust-samples=200",
            f"--advrobust-cache-dir={tmp_path / 'cache'}",
            f"--advrobust-baseline={tmp_path / 'baseline.json'}",
            "-q",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_chromium_renders_the_digits_report_with_its_gallery(tmp_path):
    html = tmp_path / "report.html"
    done = digits_run(tmp_path, f"--html={html}", "--self-contained-html")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    text = html.read_text(encoding="utf-8")
    galleries = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(galleries) == 1
    with Image.open(io.BytesIO(base64.b64decode(galleries[0]))) as img:
        gallery = np.asarray(img.convert("RGB")).astype(int)

    shot = tmp_path / "shot.png"
    screenshot(html, shot)
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB")).astype(int)
    # the first clean digit of the gallery (a 64x64 cell under the title band) is on screen
    from pytest_advrobust.reports import images

    top, left = images.TITLE_HEIGHT + images.PADDING, images.PADDING
    ch, cw = images.cell_size(8, 8)
    at = find(pixels, gallery[top : top + ch, left : left + cw])
    assert at is not None, "the gallery's first digit is not in the screenshot"
    # ... and so is the whole gallery around it, as the report embeds it
    y, x = at[0] - top, at[1] - left
    region = pixels[y : y + gallery.shape[0], x : x + gallery.shape[1]]
    assert region.shape == gallery.shape
    assert np.abs(region - gallery).mean() < 1.0


def embedded(text: str, alt_prefix: str) -> np.ndarray:
    """The pixels of the one embedded PNG whose alt text starts with ``alt_prefix``
    (pytest-html keeps the extras HTML-escaped in its data blob)."""
    text = html_lib.unescape(text)
    found = re.findall(
        r"alt='" + re.escape(alt_prefix) + r"[^']*'[^>]*src='data:image/png;base64,([^']+)'",
        text,
    )
    assert len(found) == 1, f"{len(found)} pictures named {alt_prefix!r}"
    with Image.open(io.BytesIO(base64.b64decode(found[0]))) as img:
        return np.asarray(img.convert("RGB")).astype(int)


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_chromium_shows_the_samples_a_failing_compare_lost(tmp_path):
    from pytest_advrobust.metrics.record import SampleRecord, decode, encode
    from pytest_advrobust.reports import images

    saved = digits_run(tmp_path, "--advrobust-save-baseline")
    assert saved.returncode == 0, saved.stdout[-3000:] + saved.stderr[-2000:]
    # a baseline in which 10 samples this model is fooled on were robust: they are
    # "newly fooled" by the same model, which the next run reads back from its store
    path = tmp_path / "baseline.json"
    doc = json.loads(path.read_text())
    (entry,) = doc["tests"].values()
    rec = decode(entry["samples"])
    lost = [i for i in range(len(rec)) if rec.clean[i] and not rec.robust[i]][:10]
    robust = [r or i in lost for i, r in enumerate(rec.robust)]
    entry["samples"] = encode(SampleRecord(rec.ids, rec.index, rec.clean, robust))
    entry["adversarial_accuracy"] = sum(robust) / len(rec)
    path.write_text(json.dumps(doc))

    html = tmp_path / "report.html"
    failed = digits_run(tmp_path, "--advrobust-compare", f"--html={html}", "--self-contained-html")
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-2000:]
    n = len(rec)
    counts = f"10 newly fooled, 0 newly robust of {n} shared"
    first = f"#{rec.index[lost[0]]} ({rec.ids[lost[0]][:8]})"
    dom = rendered_dom(html)
    assert counts in dom and first in dom and "REGRESSED" in dom

    text = html.read_text(encoding="utf-8")
    fooled = embedded(text, "samples newly fooled since the baseline")
    assert fooled.shape[1] == images.cell_size(8, 8)[1] * 10 + images.PADDING * 11  # 10 columns
    shot = tmp_path / "shot.png"
    screenshot(html, shot, height=2200)
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB")).astype(int)
    assert shown_whole(pixels, fooled), "the newly fooled gallery is not in the screenshot"


def shown_whole(pixels: np.ndarray, picture: np.ndarray) -> bool:
    """Whether the gallery ``picture`` is on screen: somewhere its first clean digit is,
    the whole picture is (a digit may also be in the test's other gallery)."""
    from pytest_advrobust.reports import images

    top, left = images.TITLE_HEIGHT + images.PADDING, images.PADDING
    ch, cw = images.cell_size(8, 8)
    cell = picture[top : top + ch, left : left + cw]
    ys, xs = np.nonzero(np.all(np.abs(pixels - cell[0, 0]) <= 2, axis=2))
    for cy, cx in zip(ys, xs):
        part = pixels[cy : cy + ch, cx : cx + cw]
        if part.shape != cell.shape or np.abs(part - cell).max() > 2:
            continue
        y, x = cy - top, cx - left
        region = pixels[max(y, 0) : y + picture.shape[0], max(x, 0) : x + picture.shape[1]]
        if region.shape == picture.shape and np.abs(region - picture).mean() < 1.0:
            return True
    return False
