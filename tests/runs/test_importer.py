"""The pieces of `landscape import` alone: checkpoint order, state_dicts, probe data, ties.

The command end to end (and a pickle, a nameless file, an empty folder refused) is in
test_recorder.py."""

import numpy as np
import pytest
import torch

from landscape.errors import LandscapeError
from landscape.runs import importer


def test_checkpoints_are_ordered_by_the_last_number_of_their_names(tmp_path):
    for name in ("step_100.pt", "run2-ckpt-20.safetensors", "5.pth", "notes.txt", "v3_1000.pt"):
        (tmp_path / name).write_bytes(b"")
    found = importer.checkpoint_files(tmp_path)
    assert [(s, p.name) for s, p in found] == [
        (5, "5.pth"), (20, "run2-ckpt-20.safetensors"), (100, "step_100.pt"),
        (1000, "v3_1000.pt")]
    (tmp_path / "again_100.pth").write_bytes(b"")
    with pytest.raises(LandscapeError, match="both name step 100"):
        importer.checkpoint_files(tmp_path)
    with pytest.raises(LandscapeError, match="not a folder"):
        importer.checkpoint_files(tmp_path / "step_100.pt")


def test_a_wrapped_state_dict_is_unwrapped_and_anything_else_refused(tmp_path):
    sd = {"w": torch.arange(3.0), "b": torch.ones(1)}
    for i, obj in enumerate((sd, {"model": sd, "step": 3}, {"state_dict": sd})):
        torch.save(obj, tmp_path / f"{i}.pt")
        got = importer.load_state_dict(tmp_path / f"{i}.pt")
        assert set(got) == {"w", "b"} and torch.equal(got["w"], sd["w"])
    torch.save({"w": torch.ones(1), "lr": 0.1}, tmp_path / "mixed.pt")
    with pytest.raises(LandscapeError, match="does not hold a state_dict"):
        importer.load_state_dict(tmp_path / "mixed.pt")


def test_probe_data_in_each_form(tmp_path):
    x, y = np.arange(6).reshape(2, 3), np.arange(2)
    np.savez(tmp_path / "pair.npz", inputs=x, targets=y)
    got = importer.load_probe_data(tmp_path / "pair.npz")
    assert isinstance(got, tuple) and np.array_equal(got[0], x) and np.array_equal(got[1], y)
    np.savez(tmp_path / "named.npz", input_ids=x, attention_mask=x > 2)
    assert set(importer.load_probe_data(tmp_path / "named.npz")) == {"input_ids",
                                                                     "attention_mask"}
    torch.save((torch.tensor(x), torch.tensor(y)), tmp_path / "pair.pt")
    inputs, targets = importer.load_probe_data(tmp_path / "pair.pt")
    assert torch.equal(inputs, torch.tensor(x))
    for name, message in (("missing.npz", "does not exist"), ("data.csv", "use a .pt")):
        (tmp_path / "data.csv").write_text("1,2")
        with pytest.raises(LandscapeError, match=message):
            importer.load_probe_data(tmp_path / name)


def test_keys_a_file_leaves_out_for_tied_weights_are_filled_from_their_twin():
    model = torch.nn.Sequential(torch.nn.Embedding(4, 3), torch.nn.Linear(3, 4, bias=False))
    model[1].weight = model[0].weight  # tied, as a language model's head
    saved = {"0.weight": torch.full((4, 3), 2.0)}  # the file keeps one name of the two
    filled = importer.fill_tied(model, saved)
    assert set(filled) == {"0.weight", "1.weight"} and filled["1.weight"] is saved["0.weight"]
    untied = torch.nn.Sequential(torch.nn.Embedding(4, 3), torch.nn.Linear(3, 4, bias=False))
    assert set(importer.fill_tied(untied, saved)) == {"0.weight"}  # nothing to fill from
