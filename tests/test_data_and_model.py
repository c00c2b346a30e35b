"""User data in every accepted form, the seeded split, IDX files, and the model given back."""

import gzip
import struct

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from pytest_advrobust.errors import AdvRobustError
from pytest_advrobust.evaluation.run import run_evaluation
from pytest_advrobust.inputs.data import load_idx_dataset, read_idx, split_data, to_tensor_pair
from pytest_advrobust.inputs.model import Preprocessed, borrowed, check_logits
from pytest_advrobust.settings.robust import RobustSettings

X = torch.rand(50, 1, 4, 4)
Y = torch.arange(50) % 3


class PairDataset(Dataset):
    def __len__(self):
        return 50

    def __getitem__(self, i):
        return X[i], int(Y[i])


class DictDataset(PairDataset):
    def __getitem__(self, i):
        return {"image": X[i], "label": Y[i]}


class Stream(IterableDataset):
    def __iter__(self):
        for i in range(0, 50, 10):
            yield X[i : i + 10], Y[i : i + 10]


@pytest.mark.parametrize(
    "data",
    [
        (X, Y),
        (X, Y.tolist()),
        [X.numpy(), Y.numpy()],
        TensorDataset(X, Y),
        PairDataset(),
        DictDataset(),
        DataLoader(TensorDataset(X, Y), batch_size=7),
        DataLoader(Stream(), batch_size=None),
        [(X[:25], Y[:25]), (X[25:], Y[25:])],
    ],
    ids=[
        "pair",
        "list-labels",
        "numpy",
        "tensordataset",
        "dataset",
        "dicts",
        "loader",
        "iterable",
        "batches",
    ],
)
def test_every_accepted_form_gives_the_same_tensors(data):
    x, y = to_tensor_pair(data)
    assert torch.equal(x, X) and torch.equal(y, Y)


def test_split_is_seeded_disjoint_and_reads_only_what_it_needs():
    class Counting(PairDataset):
        reads = 0

        def __getitem__(self, i):
            Counting.reads += 1
            return super().__getitem__(i)

    a = split_data(Counting(), n_samples=10, seed=1)
    # 40 samples left are too few to train a GAN on, so only the 10 evaluated are read
    assert Counting.reads == 10
    b = split_data(TensorDataset(X, Y), n_samples=10, seed=1)
    c = split_data(TensorDataset(X, Y), n_samples=10, seed=2)
    assert torch.equal(a.x, b.x) and torch.equal(a.eval_indices, b.eval_indices)
    assert not torch.equal(b.eval_indices, c.eval_indices)
    assert a.train_is_eval  # 40 left: too few to train on, so the GAN trains on the eval set
    big = split_data((torch.rand(400, 3), torch.arange(400) % 2), n_samples=100, seed=0)
    assert not big.train_is_eval and big.train_x.shape[0] == 300
    both = set(big.eval_indices.tolist())
    assert len(both) == 100


@pytest.mark.parametrize(
    "data, words",
    [
        ((torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)), "gave no samples"),
        (torch.rand(5, 3), "without labels"),
        ((torch.rand(5, 3),), "without labels"),
        ((torch.rand(5, 3), torch.zeros(4, dtype=torch.long)), "5 inputs but 4 labels"),
        ((torch.rand(5, 3), torch.rand(5)), "non-integer labels"),
        ((torch.rand(5, 3), torch.zeros(5, 3)), "one-hot"),
        (
            (torch.randint(0, 255, (5, 3), dtype=torch.uint8), torch.zeros(5, dtype=torch.long)),
            "uint8 inputs",
        ),
        (None, "returned None"),
        ("text", "without labels"),
    ],
)
def test_bad_data_is_one_sentence_naming_the_fixture(data, words):
    with pytest.raises(AdvRobustError) as info:
        to_tensor_pair(data, "my_data")
    assert "my_data" in str(info.value) and words in str(info.value)


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        ">" + "I" * array.ndim, *array.shape
    )
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_round_trip_and_dataset_layout(tmp_path):
    images = np.random.RandomState(0).randint(0, 256, (6, 28, 28))
    labels = np.arange(6) % 10
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), images)
    x, y = load_idx_dataset(tmp_path, "test")
    assert x.shape == (6, 1, 28, 28) and float(x.max()) <= 1.0
    assert torch.equal(y, torch.from_numpy(labels))
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09abc"))
    with pytest.raises(ValueError, match="expected 9 bytes"):
        read_idx(tmp_path / "bad.gz")


def make_model():
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(16, 8),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(8, 3),
    )
    m.train()
    m[1].weight.requires_grad_(False)
    return m


def snapshot(m):
    return (
        {k: v.clone() for k, v in m.state_dict().items()},
        [x.training for x in m.modules()],
        [p.requires_grad for p in m.parameters()],
        [p.device for p in m.parameters()],
    )


def assert_same(m, snap):
    state, modes, grads, devices = snap
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert [x.training for x in m.modules()] == modes
    assert [p.requires_grad for p in m.parameters()] == grads
    assert [p.device for p in m.parameters()] == devices
    assert all(p.grad is None for p in m.parameters())


def test_borrowed_model_is_frozen_inside_and_restored_after():
    m = make_model()
    snap = snapshot(m)
    with borrowed(m, torch.device("cpu")) as inner:
        assert not any(x.training for x in inner.modules())
        assert not any(p.requires_grad for p in inner.parameters())
    assert_same(m, snap)


def test_model_restored_when_the_model_raises_during_the_attack():
    m = make_model()
    snap = snapshot(m)
    calls = {"n": 0}
    original = m.forward

    def flaky(x):
        calls["n"] += 1
        if calls["n"] > 3:  # batch probe, clean predictions, gradient check; then the attack
            raise RuntimeError("boom")
        return original(x)

    m.forward = flaky
    s = RobustSettings(
        threshold=1.0, attacks=("pgd",), eps=(0.1,), steps=3, n_samples=20, sanity="off"
    )
    with pytest.raises(AdvRobustError, match="fixture 'robust_model' raised RuntimeError.*boom"):
        run_evaluation(m, (X, Y), s)
    del m.forward
    assert_same(m, snap)


def test_model_restored_when_a_custom_attack_raises():
    from pytest_advrobust.attacks import register_attack

    def broken(model, x, y, cfg, ctx):
        raise ValueError("attack failed")

    register_attack("broken-test", broken)
    m = make_model()
    snap = snapshot(m)
    s = RobustSettings(
        threshold=1.0, attacks=("broken-test",), eps=(0.1,), n_samples=20, sanity="off"
    )
    with pytest.raises(ValueError, match="attack failed"):
        run_evaluation(m, (X, Y), s)
    assert_same(m, snap)


def test_model_that_raises_on_a_plain_batch_is_one_sentence():
    def model(x):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (20x16 and 9x3)\nmore")

    s = RobustSettings(threshold=1.0, attacks=("pgd",), eps=(0.1,), n_samples=20)
    with pytest.raises(AdvRobustError) as info:
        run_evaluation(model, (X, Y), s)
    msg = str(info.value)
    assert msg.startswith("model from fixture 'robust_model' raised RuntimeError")
    assert "\n" not in msg


@pytest.mark.parametrize(
    "out, words",
    [
        (torch.zeros(4), "returned shape (4,)"),
        (torch.zeros(4, 1), "at least 2 classes"),
        (torch.full((4, 3), float("nan")), "NaN logits"),
        (torch.full((4, 3), float("inf")), "infinite logits"),
        ((torch.zeros(4, 3), torch.zeros(4)), "returned a tuple"),
        ("x", "not a tensor"),
    ],
)
def test_check_logits(out, words):
    with pytest.raises(AdvRobustError, match=None) as info:
        check_logits(out, 4, "robust_model")
    assert words in str(info.value)


def test_preprocessing_normalises_per_channel():
    seen = {}

    def model(z):
        seen["z"] = z
        return z.flatten(1)[:, :2]

    wrapped = Preprocessed(model, (0.5, 0.25), (0.5, 0.25))
    x = torch.ones(2, 2, 3, 3)
    wrapped(x)
    assert torch.allclose(seen["z"][:, 0], torch.ones(2, 3, 3))
    assert torch.allclose(seen["z"][:, 1], torch.full((2, 3, 3), 3.0))


def test_worst_case_never_above_each_attack_and_clean():
    m = make_model().eval()
    s = RobustSettings(
        threshold=1.0, attacks=("fgsm", "pgd"), eps=(0.2,), steps=5, n_samples=50, sanity="off"
    )
    both = run_evaluation(m, (X, Y), s).numbers
    for a in ("fgsm", "pgd"):
        one = run_evaluation(m, (X, Y), RobustSettings(**{**s.__dict__, "attacks": (a,)})).numbers
        assert both["adversarial_accuracy"] <= one["adversarial_accuracy"]
    assert both["adversarial_accuracy"] <= both["clean_accuracy"]
