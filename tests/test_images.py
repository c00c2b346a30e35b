"""PNG galleries and curves: files decode, layout is as documented, rows differ."""

from __future__ import annotations

import sys

import pytest

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from pytest_advrobust.errors import AdvRobustError  # noqa: E402
from pytest_advrobust.reports import images  # noqa: E402


def _expected_size(n, h, w):
    ch, cw = images.cell_size(h, w)
    width = n * (cw + images.PADDING) + images.PADDING
    height = 3 * (ch + 2 * images.PADDING + images.TEXT_HEIGHT)
    return width, height


def _batch(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * 0.6 + 0.2
    sign = torch.randint(0, 2, shape, generator=g).float() * 2 - 1
    x_adv = (x + 0.15 * sign).clamp(0, 1)
    n = shape[0]
    y = torch.arange(n) % 10
    return x, x_adv, y, y.clone(), (y + 3) % 10


def _region(img, row, col, h, w):
    """Pixels of one cell (without padding) as an (h, w, 3) array."""
    ch, cw = images.cell_size(h, w)
    top = row * (ch + 2 * images.PADDING + images.TEXT_HEIGHT) + images.PADDING
    left = images.PADDING + col * (cw + images.PADDING)
    return np.asarray(img.convert("RGB").crop((left, top, left + cw, top + ch))).astype(int)


def test_gallery_grayscale_small_images(tmp_path):
    x, x_adv, y, pc, pa = _batch((5, 1, 8, 8))
    out = images.save_gallery(tmp_path / "g.png", x, x_adv, (y, pc, pa))
    assert out == tmp_path / "g.png" and out.exists()
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == _expected_size(5, 8, 8)
        img = img.convert("RGB")
        # 8x8 images are enlarged to 64x64 cells
        assert images.cell_size(8, 8) == (64, 64)
        for col in range(5):
            clean, adv = _region(img, 0, col, 8, 8), _region(img, 1, col, 8, 8)
            assert (clean != adv).any()
            # the clean cell shows the input itself: grey, each pixel an 8x8 block
            expected = np.round(x[col, 0].numpy() * 255)
            assert np.abs(clean[::8, ::8, 0] - expected).max() <= 1
            assert (clean[..., 0] == clean[..., 1]).all() and (clean[..., 1] == clean[..., 2]).all()
            assert (clean[:8, :8] == clean[0, 0]).all()
        # the caption band under the first row is not blank: text was drawn
        ch, _ = images.cell_size(8, 8)
        band = img.crop(
            (0, ch + 2 * images.PADDING, img.size[0], ch + 2 * images.PADDING + images.TEXT_HEIGHT)
        )
        assert (np.asarray(band) != 255).any()


def test_gallery_perturbation_row_is_centred(tmp_path):
    x, _, y, pc, pa = _batch((3, 1, 8, 8))
    x_adv = x.clone()
    x_adv[:, :, :4] += 0.1  # top half pushed up, bottom half untouched
    out = images.save_gallery(tmp_path / "p.png", x, x_adv, (y, pc, pa))
    with Image.open(out) as img:
        cell = _region(img.convert("RGB"), 2, 0, 8, 8)
    assert (cell[:32] == 255).all()  # amplified to the top of the range
    assert (np.abs(cell[32:] - 128) <= 1).all()  # zero change is mid-grey


def test_gallery_rgb_caps_columns_and_names(tmp_path):
    x, x_adv, y, pc, pa = _batch((12, 3, 32, 32))
    names = [f"class{i}" for i in range(10)]
    out = images.save_gallery(
        tmp_path / "sub" / "rgb.png",
        x.to(torch.float64),
        x_adv,
        (y, pc, pa),
        max_images=4,
        class_names=names,
        amplify=3.0,
    )
    with Image.open(out) as img:
        width, height = _expected_size(4, 32, 32)
        # "y=class3 p=class4" is wider than a 64-pixel cell: it takes a second line, whole
        assert img.size == (width, height + images.TEXT_HEIGHT)
        assert img.mode == "RGB"


def test_gallery_flat_square_and_strip(tmp_path):
    x, x_adv, y, pc, pa = _batch((4, 64))
    out = images.save_gallery(tmp_path / "sq.png", x, x_adv, (y, pc, pa))
    with Image.open(out) as img:
        assert img.size == _expected_size(4, 8, 8)
    x, x_adv, y, pc, pa = _batch((4, 10))
    out = images.save_gallery(tmp_path / "strip.png", x * 5 - 2, x_adv * 5 - 2, (y, pc, pa))
    with Image.open(out) as img:
        h, w = images.strip_shape(10)
        assert (h, w) == (images.STRIP_HEIGHT, 70) and images.cell_size(h, w) == (h, w)
        assert img.size == _expected_size(4, h, w)
        clean = _region(img, 0, 0, h, w)
        assert (clean != _region(img, 1, 0, h, w)).any()
        assert set(np.unique(clean)) <= {51, 255}  # dark bars on white
    # long vectors are binned so the picture stays a sensible size
    x, x_adv, y, pc, pa = _batch((2, 1000))
    out = images.save_gallery(tmp_path / "long.png", x, x_adv, (y, pc, pa))
    with Image.open(out) as img:
        assert img.size == _expected_size(2, *images.strip_shape(1000))
        assert images.strip_shape(1000)[1] == images.MAX_BARS


def test_gallery_rejects_mismatched_shapes(tmp_path):
    x, x_adv, y, pc, pa = _batch((2, 1, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        images.save_gallery(tmp_path / "bad.png", x, x_adv[:1], (y, pc, pa))


def test_curve_png(tmp_path):
    pytest.importorskip("matplotlib")
    curve = [
        {
            "eps": e,
            "adversarial_accuracy": a,
            "adversarial_ci": [a - 0.05, a + 0.05],
            "gap": 0.9 - a,
            "passed": 0.9 - a <= 0.3,
        }
        for e, a in [(0.0, 0.9), (0.05, 0.7), (0.1, 0.5), (0.2, 0.2)]
    ]
    out = images.save_curve(tmp_path / "c" / "curve.png", curve, threshold=0.3, title="digits")
    assert out.exists()
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 100
    plain = images.save_curve(tmp_path / "plain.png", [{"eps": 0.1, "adversarial_accuracy": 0.4}])
    with Image.open(plain) as img:
        img.verify()


def test_curve_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(AdvRobustError, match=r"pytest-advrobust\[images\]") as info:
        images.save_curve(tmp_path / "c.png", [{"eps": 0.1, "adversarial_accuracy": 0.5}])
    assert str(info.value).count(".") <= 2 and "\n" not in str(info.value)
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize(
    "nodeid",
    [
        "tests/test_model.py::test_robust[cpu-0.1]",
        "a/b\\c::d e/../f",
        "..",
        "tests/test_x.py::TestA::test_b[" + "x" * 400 + "]",
    ],
)
def test_safe_filename(nodeid):
    stem = images.safe_filename(nodeid)
    assert stem and len(stem) <= images.MAX_STEM
    assert all(c.isascii() and (c.isalnum() or c in "-_.") for c in stem)
    assert "/" not in stem and "\\" not in stem and ".." not in stem
    assert not stem.startswith(".")
    assert images.safe_filename(nodeid) == stem


def test_safe_filename_readable_and_distinct():
    assert (
        images.safe_filename("tests/test_model.py::test_robust[cpu-0.1]")
        == "tests_test_model.py_test_robust_cpu-0.1"
    )
    base = "tests/test_x.py::test_" + "y" * 300
    a, b = images.safe_filename(base + "[1]"), images.safe_filename(base + "[2]")
    assert a != b and len(a) == len(b) == images.MAX_STEM
