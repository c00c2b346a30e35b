"""A real browser renders the pytest-html report of examples/digits with its gallery.

Headless Chromium (Debian's ``chromium`` package) takes a screenshot of the
self-contained HTML report; the gallery PNG embedded in the report must be
found, pixel for pixel, in the screenshot. Skips where Chromium, pytest-html
or scikit-learn is missing.
"""

from __future__ import annotations

import base64
import io
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


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (apt-get install chromium) to render the HTML report",
)
def test_chromium_renders_the_digits_report_with_its_gallery(tmp_path):
    html = tmp_path / "report.html"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(
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
            f"--html={html}",
            "--self-contained-html",
            "-q",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
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
    from pytest_advrobust import images

    top, left = images.TITLE_HEIGHT + images.PADDING, images.PADDING
    ch, cw = images.cell_size(8, 8)
    at = find(pixels, gallery[top : top + ch, left : left + cw])
    assert at is not None, "the gallery's first digit is not in the screenshot"
    # ... and so is the whole gallery around it, as the report embeds it
    y, x = at[0] - top, at[1] - left
    region = pixels[y : y + gallery.shape[0], x : x + gallery.shape[1]]
    assert region.shape == gallery.shape
    assert np.abs(region - gallery).mean() < 1.0
