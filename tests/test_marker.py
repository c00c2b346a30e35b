"""The robust marker's one list of arguments: the help, the known-argument error, the checks."""

from __future__ import annotations

import re

import pytest

from pytest_advrobust.errors import AdvRobustError
from pytest_advrobust.plugin import options
from pytest_advrobust.settings import marker
from pytest_advrobust.settings.marker import MARKER_ARGS, from_marker
from pytest_advrobust.settings.robust import RobustSettings


def test_the_marker_help_lists_every_marker_argument():
    signature = marker.MARKER_HELP.split("):")[0]
    listed = re.findall(r"(?:\(|, )([a-z_]+)(?=[=,)]|$)", signature)
    assert listed == list(MARKER_ARGS)
    assert "targets" in listed
    # The line pytest --markers shows is the one built from the table.
    assert options.MARKER_LINE == marker.MARKER_HELP


def test_an_unknown_argument_names_every_known_one():
    with pytest.raises(AdvRobustError) as info:
        from_marker({"threshold": 0.1, "epsilon": 0.1}, (), RobustSettings(), known_attacks=["pgd"])
    message = str(info.value)
    assert "unknown argument 'epsilon' (did you mean 'eps'?); " in message
    assert message.endswith("known arguments: " + ", ".join(MARKER_ARGS))


def test_a_misspelled_attack_is_met_with_the_closest_name_and_a_far_one_without():
    def message(name):
        with pytest.raises(AdvRobustError) as info:
            from_marker(
                {"threshold": 0.1, "attack": name},
                (),
                RobustSettings(),
                known_attacks=["pgd", "apgd-t"],
            )
        return str(info.value)

    assert "names unknown attack 'pdg' (did you mean 'pgd'?); known: pgd, apgd-t" in message("pdg")
    assert "names unknown attack 'deepfool'; known: pgd, apgd-t" in message("deepfool")
    assert "names unknown attack 'PGD' (did you mean 'pgd'?)" in message("PGD")


@pytest.mark.parametrize("spelling", ["Linf", "inf", "LINF"])
def test_the_peers_spellings_of_the_norm_are_met_with_ours(spelling):
    with pytest.raises(AdvRobustError) as info:
        from_marker(
            {"threshold": 0.1, "norm": spelling}, (), RobustSettings(), known_attacks=["pgd"]
        )
    assert f"norm={spelling!r} must be 'linf' or 'l2' (did you mean 'linf'?)" in str(info.value)


@pytest.mark.parametrize(
    "arg, value, why",
    [
        ("threshold", 1.5, "must lie in [0, 1]"),
        ("eps", [], "must not be empty"),
        ("eps", -0.1, "must be positive"),
        ("norm", "l1", "must be 'linf' or 'l2'"),
        ("steps", 0, "must be at least 1"),
        ("targets", -1, "must be at least 0"),
        ("targets", 1.5, "is not an integer"),
        ("step_size", 0, "must be positive"),
        ("random_start", 1, "must be True or False"),
        ("metric", "ratio", "must be 'absolute' or 'relative'"),
        ("sanity", "some", "must be one of off, cheap, full"),
        ("tolerance", -0.1, "must lie in [0, 1]"),
        ("significance", 1.0, "must lie strictly between 0 and 1"),
        ("significance", "0.05", "is text, not a number: write it without quotes"),
        ("significance", "often", "is not a number"),
        ("eps", "8/255", "is text, not a number: write it without quotes (eps=8/255)"),
        ("threshold", 50, "must lie in [0, 1]: a gap of 50% is threshold=0.5"),
        ("validity", 1.0, "must lie in [0.5, 1)"),
        ("model", "not a name", "must be the name of a fixture"),
        ("bounds", (1, 0), "must have low < high"),
        ("preprocessing", ((0.5,), (0.0,)), "must have a positive std"),
        ("channel_axis", 0, "is the batch axis"),
        ("min_clean_accuracy", 2, "must lie in [0, 1]"),
        ("threshold_eps", 0.3, "must be one of the swept eps values"),
    ],
)
def test_each_bad_argument_gets_one_sentence_naming_it(arg, value, why):
    kwargs = {"threshold": 0.1, arg: value}
    with pytest.raises(AdvRobustError) as info:
        from_marker(kwargs, (), RobustSettings(), known_attacks=["pgd"])
    assert str(info.value).startswith(f"robust marker argument {arg}={value!r} {why}")


def test_good_arguments_land_in_the_settings():
    s = from_marker(
        {
            "attack": "pgd",
            "eps": [0.2, 0.1, 0.2],
            "threshold_eps": 0.2,
            "targets": 3,
            "validity": 0.5,
        },
        (0.25,),
        RobustSettings(),
        known_attacks=["pgd"],
    )
    assert (s.threshold, s.eps, s.threshold_eps, s.targets, s.validity) == (
        0.25,
        (0.1, 0.2),
        0.2,
        3,
        0.5,
    )
    # A default eps follows the norm; optional values may be reset to None.
    l2 = from_marker(
        {"norm": "l2", "min_clean_accuracy": None, "bounds": None},
        (),
        RobustSettings(),
        require_threshold=False,
        known_attacks=["pgd"],
    )
    assert (l2.norm, l2.eps, l2.min_clean_accuracy, l2.bounds) == ("l2", (0.5,), None, None)


@pytest.mark.parametrize(
    "kwargs, why",
    [
        (
            {"attack": "pgd", "refine": 3},
            "robust marker argument refine=3 has no effect with attack='pgd': only 'gan' reads "
            "it; remove it, or add such an attack to the list",
        ),
        (
            {"attack": ["apgd", "fgsm"], "targets": 2},
            "robust marker argument targets=2 has no effect with attack=['apgd', 'fgsm']: only "
            "'pgd', 'apgd-t' or 'autoattack-lite' read it;",
        ),
    ],
)
def test_an_argument_no_attack_of_the_test_reads_is_refused(kwargs, why):
    with pytest.raises(AdvRobustError) as info:
        from_marker({"threshold": 0.1, **kwargs}, (), RobustSettings())
    assert str(info.value).startswith(why)


def test_an_argument_some_attack_of_the_test_reads_is_taken():
    kwargs = {"threshold": 0.1, "attack": ["gan", "pgd"], "refine": 3}
    both = from_marker(kwargs, (), RobustSettings())
    assert (both.attacks, both.refine) == (("gan", "pgd"), 3)
    # zero is every attack's default: nothing to refuse
    off = from_marker({"threshold": 0.1, "attack": "apgd", "targets": 0}, (), RobustSettings())
    assert off.targets == 0
    # an attack another plugin registered may read anything
    mine = from_marker(
        {"threshold": 0.1, "attack": "mine", "refine": 2},
        (),
        RobustSettings(),
        known_attacks=["pgd", "mine"],
    )
    assert mine.refine == 2


def test_a_label_without_a_logit_names_both_fixtures_and_the_range():
    import torch

    from pytest_advrobust.metrics.accuracy import predict

    x, y = torch.zeros(4, 3), torch.tensor([0, 1, 2, 3])
    with pytest.raises(AdvRobustError) as info:
        predict(torch.nn.Linear(3, 3), x, y, 8, "my_model", "my_data")
    assert str(info.value) == (
        "fixture 'my_data' has label 3, but the model from fixture 'my_model' gives 3 logits, "
        "so labels must lie in 0..2: number the classes from 0, or give the model an output "
        "for every class"
    )
