"""Algorithmic tasks: answers checked by brute force on the rendered text, layout, lengths."""

import json

import numpy as np
import pytest
import torch

from landscape.errors import LandscapeError
from landscape.train.model import LoopedTransformer, ModelConfig, token_loss
from landscape.train.tasks import algorithmic
from landscape.train.tasks.algorithmic import (
    TASK_NAMES,
    AlgorithmicConfig,
    decode,
    encode,
    generate,
)
from landscape.train.tasks.base import IGNORE

SMALL = dict(train_min_len=1, train_max_len=5, n_train=300, n_test=40)
SMALL_NO_MAX = dict(train_min_len=1, train_max_len=8, n_train=50, n_test=20)


# ------------------------------------------------------------ independent reference


def reference(name: str, prompt: str) -> str:
    """The answer text of a prompt, by plain Python on strings and ints (LSB first)."""
    if name == "parity":
        return str(prompt.count("1") % 2)
    if name == "copy":
        return prompt
    if name == "addition":
        a, b = prompt.split("+")
        total = int(a[::-1], 2) + int(b[::-1], 2)
        return format(total, f"0{len(a) + 1}b")[::-1]
    if name == "binary_sum":
        width = len(bin(len(prompt))) - 2  # digits needed to write n
        return format(prompt.count("1"), f"0{width}b")[::-1]
    if name == "unique_set":
        out = []
        for c in prompt:
            if c not in out:
                out.append(c)
        return "".join(out) + "$"
    raise AssertionError(name)


def input_size(name: str, prompt: str) -> int:
    """n of a prompt: bits per operand for addition, tokens otherwise."""
    return len(prompt.split("+")[0]) if name == "addition" else len(prompt)


def check_split(name, split, alphabet=8):
    """Every row: answer == reference, scored positions exactly the answer's; returns sizes."""
    inputs, targets = split.inputs.numpy(), split.targets.numpy()
    sizes = []
    for row, tgt in zip(inputs, targets):
        text = decode(row)
        prompt, answer = text.split("=")  # exactly one separator
        assert answer == reference(name, prompt), f"{name}: {text!r}"
        assert "." not in text, f"PAD inside a sample: {text!r}"
        if name == "unique_set":
            assert set(prompt) <= set("0123456789abcdefghijklmnopqrstuvwxyz"[:alphabet])
        else:
            assert set(prompt) <= set("01+") and prompt.count("+") == (name == "addition")
        p = len(prompt)
        scored = np.flatnonzero(tgt != IGNORE)
        np.testing.assert_array_equal(scored, np.arange(p, p + len(answer)), err_msg=text)
        np.testing.assert_array_equal(tgt[scored], encode(answer), err_msg=text)
        np.testing.assert_array_equal(tgt[scored], row[scored + 1])  # next-token targets
        assert (row[len(text) :] == algorithmic.PAD).all()
        sizes.append(input_size(name, prompt))
    return np.array(sizes)


def test_reference_by_hand():
    assert reference("parity", "1101") == "1"
    assert reference("addition", "10+11") == "001"  # 1 + 3 = 4
    assert reference("addition", "11111011+00111111") == "110110111"  # 223 + 252 = 475
    assert reference("binary_sum", "1101") == "110"  # 3 ones, 3 digits for n = 4
    assert reference("binary_sum", "1111111") == "111"  # 7 ones, 3 digits for n = 7
    assert reference("unique_set", "3a31") == "3a1$"


# ------------------------------------------------------------ answers and layout


@pytest.mark.parametrize("name", TASK_NAMES)
def test_answers_and_scored_positions(name):
    cfg = AlgorithmicConfig(name, **SMALL)
    data = generate(cfg)
    train_sizes = check_split(name, data.train)
    np.testing.assert_array_equal(train_sizes, data.sample_info["train_n"])
    assert train_sizes.min() == 1 and train_sizes.max() == 5  # 300 draws hit both ends
    assert set(train_sizes) == set(range(1, 6))
    iid_sizes = check_split(name, data.evals["iid"])
    assert iid_sizes.min() >= 1 and iid_sizes.max() <= 5
    for n in cfg.eval_lengths:
        assert (check_split(name, data.evals[f"len_{n}"]) == n).all()


def test_default_config_answers():
    for name in TASK_NAMES:
        data = generate(AlgorithmicConfig(name))
        assert len(data.train) == 4096 and all(len(s) == 256 for s in data.evals.values())
        check_split(name, data.train.subset(range(0, 4096, 7)))
        check_split(name, data.evals["len_16"])


@pytest.mark.parametrize("alphabet", [2, 36])
def test_unique_set_alphabet_edges(alphabet):
    cfg = AlgorithmicConfig("unique_set", alphabet=alphabet, **SMALL)
    data = generate(cfg)
    assert data.vocab_size == 4 + alphabet
    for split in (data.train, *data.evals.values()):
        check_split("unique_set", split, alphabet)
        assert split.inputs.max() < data.vocab_size


def test_answer_lengths():
    # binary_sum writes n.bit_length() digits: 1, 2, 2, 3, 3, 3, 3, 4 for n = 1..8
    data = generate(AlgorithmicConfig("binary_sum", test_lengths=(7, 8, 16), **SMALL_NO_MAX))
    for n, width in ((7, 3), (8, 4), (16, 5)):
        split = data.evals[f"len_{n}"]
        assert ((split.targets != IGNORE).sum(1) == width).all()
        assert split.inputs.shape[1] == n + 1 + width
    addition = generate(AlgorithmicConfig("addition", **SMALL)).evals["len_10"]
    assert addition.inputs.shape[1] == 3 * 10 + 3
    assert ((addition.targets != IGNORE).sum(1) == 11).all()


# ------------------------------------------------------------ splits, lengths, metadata


def test_default_test_lengths_reach_twice_train_max():
    assert AlgorithmicConfig("parity").eval_lengths == (8, 12, 16)
    assert AlgorithmicConfig("parity", train_max_len=5).eval_lengths == (5, 8, 10)
    assert AlgorithmicConfig("parity", train_max_len=1).eval_lengths == (1, 2)
    for m in range(1, 20):
        assert max(AlgorithmicConfig("copy", train_max_len=m).eval_lengths) >= 2 * m


def test_split_order_metadata_and_ceilings():
    cfg = AlgorithmicConfig("addition", test_lengths=[12, 3, 9], **SMALL)
    assert cfg.test_lengths == (12, 3, 9)  # a TOML list becomes a tuple
    data = generate(cfg)
    assert list(data.evals) == ["iid", "len_3", "len_9", "len_12"]
    assert data.ceilings == {k: {"acc": 1.0, "loss": 0.0} for k in data.evals}
    widths = {"train": data.train.inputs.shape[1]} | {
        k: s.inputs.shape[1] for k, s in data.evals.items()
    }
    assert data.info["seq_len"] == widths
    assert widths["len_12"] == 3 * 12 + 3 and widths["train"] == 3 * 5 + 3
    assert data.max_len == max(widths.values())
    assert data.info["test_lengths"] == [3, 9, 12] and data.info["train_lengths"] == [1, 5]
    assert decode(encode(data.info["token_chars"]), strip=False) == ".=+$01"
    assert 0.0 <= data.info["iid_seen_in_train"] <= 1.0
    json.dumps(data.info)  # serialisable for the run file


def test_iid_seen_in_train_counts_overlap():
    # n = 1 parity has 2 possible samples: all of them are seen; long copy: none are
    short = generate(AlgorithmicConfig("parity", train_max_len=1, n_train=20, n_test=10))
    assert short.info["iid_seen_in_train"] == 1.0
    long = generate(
        AlgorithmicConfig("copy", train_min_len=30, train_max_len=30, n_train=20, n_test=10)
    )
    assert long.info["iid_seen_in_train"] == 0.0


def test_determinism_and_independent_streams():
    def tensors(data):
        return [data.train.inputs, data.train.targets] + [
            t for s in data.evals.values() for t in (s.inputs, s.targets)
        ]

    cfg = AlgorithmicConfig("unique_set", **SMALL)
    a, b = generate(cfg), generate(cfg)
    assert all(torch.equal(x, y) for x, y in zip(tensors(a), tensors(b)))
    other = generate(AlgorithmicConfig("unique_set", seed=1, **SMALL))
    assert not torch.equal(a.train.inputs[:, :5], other.train.inputs[:, :5])
    assert not torch.equal(a.evals["len_10"].inputs, other.evals["len_10"].inputs)
    # the training data do not depend on the evaluation settings, nor len_<n> on the others
    more = generate(
        AlgorithmicConfig("unique_set", **(SMALL | dict(n_test=7)), test_lengths=(4, 11))
    )
    assert torch.equal(a.train.inputs, more.train.inputs)
    fewer = generate(AlgorithmicConfig("unique_set", test_lengths=(10,), **SMALL))
    assert torch.equal(a.evals["len_10"].inputs, fewer.evals["len_10"].inputs)
    assert torch.equal(a.evals["iid"].inputs, fewer.evals["iid"].inputs)


@pytest.mark.parametrize("positions", ["none", "rope", "learned"])
def test_model_runs_on_every_split(positions):
    torch.manual_seed(0)
    for name in ("addition", "unique_set"):
        data = generate(AlgorithmicConfig(name, **SMALL))
        model = LoopedTransformer(
            ModelConfig(d_model=8, n_heads=2, positions=positions, loops=2),
            data.vocab_size,
            data.max_len,
        ).double()
        for split in (data.train, *data.evals.values()):
            batch = split.subset(range(8))
            logits = model(batch.inputs)
            assert logits.shape == (*batch.inputs.shape, data.vocab_size)
            loss = token_loss(logits, batch.targets)
            # near-uniform output at init: loss close to log(vocab)
            assert abs(loss.item() - np.log(data.vocab_size)) < 0.5


# ------------------------------------------------------------ rendering and validation


def test_decode_encode():
    ids = encode("0110+1=$.")
    np.testing.assert_array_equal(ids, [4, 5, 5, 4, 2, 5, 1, 3, 0])
    assert decode(ids) == "0110+1=$"
    assert decode(torch.as_tensor(ids), strip=False) == "0110+1=$."
    with pytest.raises(LandscapeError, match="not tokens"):
        encode("01x?")
    with pytest.raises(LandscapeError, match="token id 99"):
        decode([4, 99])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(name="sorting"), "parity, copy, addition, binary_sum, unique_set"),
        (dict(train_min_len=0), "train_min_len"),
        (dict(train_min_len=6, train_max_len=5), "train_max_len"),
        (dict(train_max_len=2.5), "train_max_len"),
        (dict(n_train=0), "n_train"),
        (dict(n_test=0), "n_test"),
        (dict(n_test=True), "n_test"),
        (dict(alphabet=1), "alphabet"),
        (dict(alphabet=37), "alphabet"),
        (dict(seed=-1), "seed"),
        (dict(test_lengths=(8, 15)), "test_lengths"),
        (dict(test_lengths=(16, 0)), "test_lengths"),
        (dict(test_lengths=(16, 16)), "test_lengths"),
        (dict(test_lengths="16"), "test_lengths"),
        (dict(test_lengths=(16.0,)), "test_lengths"),
    ],
)
def test_bad_configs(kwargs, field):
    kwargs = dict(name="parity") | kwargs
    with pytest.raises(LandscapeError, match=field):
        AlgorithmicConfig(**kwargs)


@pytest.mark.parametrize("kwargs, splits", [
    (dict(test_lengths=(16,)), ["len_16"]),  # exactly 2 * train_max_len
    (dict(train_min_len=3, train_max_len=3, test_lengths=(1, 6)), ["len_1", "len_6"]),
    (dict(test_lengths=(np.int64(20),)), ["len_20"]),
])
def test_edge_configs_are_accepted_and_generate_exactly_those_lengths(kwargs, splits):
    data = generate(AlgorithmicConfig("parity", n_train=8, n_test=4, **kwargs))
    assert list(data.evals) == ["iid", *splits]
    for name in splits:
        split, n = data.evals[name], int(name.removeprefix("len_"))
        assert len(split) == 4
        assert all(len(decode(row).split("=")[0]) == n for row in split.inputs), name


def test_splits_carry_each_samples_input_size():
    from landscape.train.tasks.algorithmic import AlgorithmicConfig, generate

    data = generate(AlgorithmicConfig("addition", train_max_len=4, n_train=32, n_test=8))
    assert data.train.sizes.tolist() == data.sample_info["train_n"].tolist()
    assert data.evals["iid"].sizes.tolist() == data.sample_info["iid_n"].tolist()
    assert data.evals["len_8"].sizes.tolist() == [8] * 8
    sep = (data.train.inputs == 1).int().argmax(1)  # SEP after 2n + 1 prompt tokens
    assert (sep == 2 * data.train.sizes + 1).all()
    sub = data.train.subset([3, 1])
    assert sub.sizes.tolist() == data.train.sizes[[3, 1]].tolist()


def test_without_teacher_forcing_the_answer_is_hidden_from_the_input():
    from landscape.train.tasks.algorithmic import PAD, AlgorithmicConfig, decode, generate

    forced = generate(AlgorithmicConfig("addition", train_max_len=3, n_train=16, n_test=4))
    hidden = generate(AlgorithmicConfig("addition", train_max_len=3, n_train=16, n_test=4,
                                        teacher_forcing=False))
    for k in forced.evals:
        assert torch.equal(forced.evals[k].targets, hidden.evals[k].targets)
    row_f, row_h = forced.evals["len_6"].inputs[0], hidden.evals["len_6"].inputs[0]
    prompt = decode(row_f).split("=")[0]
    assert decode(row_h) == prompt + "="  # 7 answer bits became PAD (stripped)
    assert (row_h[len(prompt) + 1 :] == PAD).all()
