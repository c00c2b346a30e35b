"""Sanity checks catch deliberately broken models and stay quiet on a sound one."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from pytest_advrobust import sanity  # noqa: E402
from pytest_advrobust.attacks.base import AttackConfig, AttackContext  # noqa: E402
from pytest_advrobust.attacks.gradient import pgd  # noqa: E402

EPS = 0.1


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.body(x)


class Wrapped(nn.Module):
    """The trained network with something broken around it."""

    def __init__(self, net, kind):
        super().__init__()
        self.net, self.kind = net, kind

    def forward(self, x):
        if self.kind == "softmax":
            return F.softmax(self.net(x), dim=1)
        if self.kind == "log_softmax":
            return F.log_softmax(self.net(x), dim=1)
        if self.kind == "quantised":
            return self.net(torch.round(x * 4) / 4)
        if self.kind == "dropout":
            h = self.net.body[2](self.net.body[1](self.net.body[0](x)))
            return self.net.body[3](F.dropout(h, p=0.5, training=True))
        if self.kind == "detached":
            return self.net(x.detach())
        if self.kind == "sqrt":
            return self.net(torch.sqrt(x))
        raise AssertionError(self.kind)


def _freeze(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors run fastest on one thread, and far faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits(one_thread):
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    x, y = x[perm], y[perm]
    torch.manual_seed(0)
    net = MLP()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    xtr, ytr = x[:1400], y[:1400]
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(net(xtr), ytr).backward()
        opt.step()
    _freeze(net)
    xe, ye = x[1400:1656], y[1400:1656]  # 256 held-out samples
    with torch.no_grad():
        acc = (net(xe).argmax(1) == ye).float().mean().item()
    assert acc > 0.9
    return net, xe, ye


def _cfg(**kw):
    base = dict(eps=EPS, steps=20)
    base.update(kw)
    return AttackConfig(**base)


def _run(model, x, y, cfg=None, level="cheap", attacks=("pgd",), x_adv=None, **kw):
    cfg = cfg or _cfg()
    ctx = AttackContext(device="cpu")
    if x_adv is None:
        x_adv = pgd(model, x, y, cfg, ctx)
    found = sanity.Evaluated(x, y, x_adv, attacks=list(attacks), **kw)
    return sanity.run_sanity(model, found, cfg, ctx, level)


def _ids(flags):
    return {f["flag"] for f in flags}


def _check_shape(flags):
    for f in flags:
        extra = {"changed", "checked"} if f["flag"] == "nondeterministic" else set()
        assert set(f) == {"flag", "message", "suggests", "level"} | extra
        if extra:  # the spread a baseline comparison names
            assert 0 <= f["changed"] <= f["checked"] and f["checked"] > 0
        assert f["flag"] in sanity.ALL_FLAGS
        assert f["level"] == "warning"
        assert f["message"] and f["suggests"]
        assert any(ch.isdigit() for ch in f["message"])


def test_flag_ids_are_documented():
    doc = sanity.__doc__
    for flag in sanity.ALL_FLAGS:
        assert f"``{flag}``" in doc
    assert len(set(sanity.ALL_FLAGS)) == len(sanity.ALL_FLAGS) == 11


def test_sound_model_raises_no_flag_cheap(digits):
    net, x, y = digits
    flags = _run(net, x, y, level="cheap")
    assert flags == []


def test_sound_model_raises_no_flag_full(digits):
    net, x, y = digits
    flags = _run(net, x[:128], y[:128], level="full")
    assert flags == [], flags


def test_level_off_and_unknown(digits):
    net, x, y = digits
    assert _run(_freeze(Wrapped(net, "softmax")), x[:16], y[:16], level="off") == []
    with pytest.raises(ValueError, match="sanity level"):
        _run(net, x[:16], y[:16], level="paranoid")


def test_softmax_output_flags_probabilities(digits):
    net, x, y = digits
    flags = _run(_freeze(Wrapped(net, "softmax")), x, y)
    _check_shape(flags)
    assert "probabilities" in _ids(flags)
    msg = next(f for f in flags if f["flag"] == "probabilities")
    assert "logits" in msg["suggests"]


def test_log_softmax_output_is_not_a_false_alarm(digits):
    # cross-entropy attacks see the same gradients through a final log_softmax
    net, x, y = digits
    flags = _run(_freeze(Wrapped(net, "log_softmax")), x, y)
    assert "probabilities" not in _ids(flags)


def test_quantised_input_flags_gradients_and_large_eps(digits):
    net, x, y = digits
    model = _freeze(Wrapped(net, "quantised"))
    x, y = x[:128], y[:128]
    cfg = _cfg()
    ctx = AttackContext(device="cpu")
    x_adv = pgd(model, x, y, cfg, ctx)
    # PGD is fooled into reporting robustness: it cannot move at all.
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean()
        adv = (model(x_adv).argmax(1) == y).float().mean()
    assert adv == clean
    cheap = sanity.run_sanity(model, sanity.Evaluated(x, y, x_adv, attacks=["pgd"]), cfg, ctx)
    _check_shape(cheap)
    assert "gradients" in _ids(cheap)
    assert "zero" in next(f["message"] for f in cheap if f["flag"] == "gradients")
    full = sanity.run_sanity(
        model, sanity.Evaluated(x, y, x_adv, attacks=["pgd"]), cfg, ctx, "full"
    )
    _check_shape(full)
    assert {"gradients", "large_eps"} <= _ids(full)


def test_detached_input_flags_gradients(digits):
    net, x, y = digits
    model = _freeze(Wrapped(net, "detached"))
    cfg = _cfg()
    found = sanity.Evaluated(x[:32], y[:32], x[:32], attacks=["gan"])
    flags = sanity.run_sanity(model, found, cfg, AttackContext())
    assert "gradients" in _ids(flags)
    assert "no gradient" in next(f["message"] for f in flags if f["flag"] == "gradients")
    # full level skips the gradient attacks instead of crashing inside torch
    full = sanity.run_sanity(model, found, cfg, AttackContext(), level="full")
    assert _ids(full) == {"gradients"}


def test_nonfinite_gradient_flags_gradients(digits):
    net, x, y = digits
    model = _freeze(Wrapped(net, "sqrt"))
    found = sanity.Evaluated(x[:32], y[:32], x[:32], attacks=["gan"])
    flags = sanity.run_sanity(model, found, _cfg(), AttackContext())
    assert "gradients" in _ids(flags)
    assert "NaN or inf" in next(f["message"] for f in flags if f["flag"] == "gradients")


def test_dropout_in_eval_flags_nondeterministic(digits):
    net, x, y = digits
    model = _freeze(Wrapped(net, "dropout"))
    torch.manual_seed(0)
    flags = _run(model, x[:64], y[:64], x_adv=x[:64])
    _check_shape(flags)
    assert "nondeterministic" in _ids(flags)


def test_weak_step_size_flags_weak_beats_strong(digits):
    net, x, y = digits
    cfg = _cfg(steps=1, step_size=1e-4)  # PGD barely moves; FGSM takes the full eps step
    flags = _run(net, x[:128], y[:128], cfg=cfg, level="full")
    _check_shape(flags)
    assert "weak_beats_strong" in _ids(flags)
    msg = next(f["message"] for f in flags if f["flag"] == "weak_beats_strong")
    assert "FGSM" in msg
    # cheap level does not run extra attacks
    assert "weak_beats_strong" not in _ids(_run(net, x[:128], y[:128], cfg=cfg))


def test_gan_beating_pgd_flags_weak_beats_strong(digits):
    net, x, y = digits
    x, y = x[:128], y[:128]
    ctx = AttackContext()
    weak_pgd = _cfg(steps=1, step_size=1e-4)
    strong = pgd(net, x, y, _cfg(steps=20), ctx)  # stands in for a strong "gan" result
    found = sanity.Evaluated(x, y, strong, attacks=["gan"])
    flags = sanity.run_sanity(net, found, weak_pgd, ctx, level="full")
    assert any(f["flag"] == "weak_beats_strong" and "gan" in f["message"] for f in flags)


def test_adversarial_above_clean_is_flagged(digits):
    net, x, y = digits
    x, y = x[:64], y[:64]
    # "clean" inputs the model gets wrong, "adversarial" ones it gets right
    blank = torch.zeros_like(x)
    found = sanity.Evaluated(blank, y, x, attacks=["gan"])
    flags = sanity.run_sanity(net, found, _cfg(), AttackContext())
    _check_shape(flags)
    assert "adv_above_clean" in _ids(flags)


def test_not_monotone_curve_is_flagged(digits):
    net, x, y = digits
    curve = [
        {"eps": 0.05, "adversarial_accuracy": 0.80},
        {"eps": 0.10, "adversarial_accuracy": 0.50},
        {"eps": 0.20, "adversarial_accuracy": 0.70},
        {"eps": 0.30, "adversarial_accuracy": 0.20},
    ]
    flags = _run(net, x[:32], y[:32], curve=curve)
    _check_shape(flags)
    assert _ids(flags) == {"curve_not_monotone"}
    msg = next(f["message"] for f in flags)
    assert "0.500" in msg and "0.700" in msg and "eps=0.2" in msg


def test_curve_checks_tolerate_noise():
    down = [{"eps": e, "adversarial_accuracy": a} for e, a in [(0.0, 0.9), (0.1, 0.6), (0.2, 0.3)]]
    assert sanity.check_curve(down) is None
    wobble = [
        {"eps": 0.1, "adversarial_accuracy": 0.6},
        {"eps": 0.2, "adversarial_accuracy": 0.605},
    ]
    assert sanity.check_curve(wobble, n=512) is None
    assert sanity.check_curve(None) is None and sanity.check_curve([]) is None
    # unsorted input is sorted by eps first
    unsorted = [
        {"eps": 0.2, "adversarial_accuracy": 0.9},
        {"eps": 0.1, "adversarial_accuracy": 0.5},
    ]
    assert sanity.check_curve(unsorted)["flag"] == "curve_not_monotone"


def test_sanity_leaves_inputs_untouched(digits):
    net, x, y = digits
    x0, y0 = x.clone(), y.clone()
    _run(net, x[:64], y[:64], level="full")
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert all(not p.requires_grad for p in net.parameters())
