"""Every stored part through its codec and a run file, and what a reader gets otherwise."""

import dataclasses

import numpy as np
import pytest

from landscape.runfile import schema, store
from landscape.runfile.schema import NotProbed, StaleError

STEP = 7


def _value(f: dataclasses.Field, rng: np.random.Generator, i: int):
    """A value for field ``f`` of the type it declares, different for every field."""
    kind, declared = f.metadata.get("as"), str(f.type)
    if f.name == "curvature":  # names its group: the Hessian's here (the others below)
        return schema.HESSIAN
    if kind == "nested":
        return _sample(f.metadata["cls"], rng)
    if kind == "table":
        return {"b": _sample(f.metadata["cls"], rng), "a": _sample(f.metadata["cls"], rng)}
    if kind == "directions":
        return {ax: {"w": rng.normal(size=(2, 3)), "b": rng.normal(size=4)} for ax in "xy"}
    if kind == "json":
        return {"kind": "random", "seed": i, "nested": {"list": [1.5, i]}}
    if declared.startswith("np.ndarray"):
        return [rng.normal(size=(i % 3 + 1, 4)).astype(np.float32),
                rng.integers(0, 9, size=i % 4 + 2), rng.random(3) > 0.5][i % 3]
    return {"int": i + 2, "float": 0.25 + i, "bool": i % 2 == 0, "str": f"s{i}"}[declared]


def _sample(cls: type, rng: np.random.Generator):
    return cls(**{f.name: _value(f, rng, i) for i, f in enumerate(dataclasses.fields(cls))
                  if f.init})


def _assert_same(a, b, where=""):
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):  # JSON sorts its keys; a table keeps its order (tested below)
        assert sorted(a) == sorted(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture
def run_file(tmp_path):
    path = tmp_path / "r.h5"
    store.commit(path, lambda tx: None, create=True, durable=False)
    return path


@pytest.mark.parametrize("cls", schema.PARTS.values(), ids=list(schema.PARTS))
def test_every_part_comes_back_as_written(cls, run_file):
    part = _sample(cls, np.random.default_rng(len(cls.NAME)))
    step = None if cls.KIND == schema.RUN else STEP
    assert schema.read(run_file, cls, step) is None  # never computed
    with pytest.raises(NotProbed, match="landscape probe"):
        schema.require(run_file, cls, step)
    schema.write(run_file, part, step)
    _assert_same(part, schema.read(run_file, cls, step), cls.NAME)
    _assert_same(part, schema.require(run_file, cls, step), cls.NAME)
    assert type(part).group(step) == (f"probe/run/{cls.NAME}" if step is None
                                      else f"probe/step_{STEP}/{cls.KIND}/{cls.NAME}")


def test_the_stored_layout_is_plain_datasets_and_attributes(run_file):
    top = _sample(schema.Top, np.random.default_rng(0))
    schema.write(run_file, top, STEP)
    g = store.read_group(run_file, "probe/step_7/hessian/top")
    np.testing.assert_array_equal(g["values"], top.values)  # an array: a dataset
    assert g["attrs"]["lanczos_steps"] == top.lanczos_steps  # a scalar: an attribute
    assert g["attrs"]["settings"] == top.settings and g["attrs"]["complete"] is True
    blocks = _sample(schema.Blocks, np.random.default_rng(1))
    schema.write(run_file, blocks, STEP)
    g = store.read_group(run_file, "probe/step_7/hessian/blocks")
    assert g["groups"]["attrs"]["keys"] == ["b", "a"]  # a table keeps its order


@pytest.mark.parametrize("curvature", ["ggn", "fisher"])
def test_a_part_of_another_curvature_is_stored_in_its_own_group(run_file, curvature):
    top = dataclasses.replace(_sample(schema.Top, np.random.default_rng(0)), curvature=curvature)
    schema.write(run_file, top, STEP)
    assert store.read_group(run_file, f"probe/step_7/{curvature}/top") is not None
    assert schema.read(run_file, schema.Top, STEP) is None  # not the Hessian's
    with pytest.raises(NotProbed, match="--hessian"):
        schema.require(run_file, schema.Top, STEP)
    _assert_same(top, schema.read(run_file, schema.Top, STEP, curvature), curvature)
    other = "fisher" if curvature == "ggn" else "ggn"
    with pytest.raises(NotProbed, match=f"--curvature {other}"):
        schema.require(run_file, schema.Top, STEP, other)


def test_an_unknown_curvature_is_refused_by_name(run_file):
    with pytest.raises(schema.LandscapeError, match="unknown curvature 'gnn'.*hessian, ggn"):
        schema.read(run_file, schema.Top, STEP, "gnn")


def test_a_field_left_none_is_not_stored_and_comes_back_none(run_file):
    exact = schema.Exact(eigvals=np.arange(4.0))
    schema.write(run_file, exact, STEP)
    assert set(store.read_group(run_file, exact.group(STEP))) == {"attrs", "eigvals"}
    back = schema.read(run_file, schema.Exact, STEP)
    assert back.vectors is None and back.adam_eigvals is None and back.adam_step == 0


def test_a_part_another_version_wrote_is_stale_not_missing(run_file):
    schema.write(run_file, _sample(schema.Trace, np.random.default_rng(2)), STEP)
    group = schema.Trace.group(STEP)
    store.commit(run_file, lambda tx: tx.delete(f"{group}/samples"), durable=False)
    for read in (schema.read, schema.require):
        with pytest.raises(StaleError, match="'samples'.*--force") as e:
            read(run_file, schema.Trace, STEP)
        assert not isinstance(e.value, NotProbed)
    with pytest.raises(StaleError, match="has no 'estimate'"):
        schema.decode(schema.Trace, {"attrs": {}})


def test_a_grid_in_progress_is_read_only_as_partial(run_file):
    grid = dataclasses.replace(_sample(schema.SliceRandom, np.random.default_rng(3)),
                               complete=False, done=np.zeros((2, 2), bool))
    schema.write(run_file, grid, STEP)
    assert schema.read(run_file, schema.SliceRandom, STEP) is None
    with pytest.raises(NotProbed):
        schema.require(run_file, schema.SliceRandom, STEP)
    _assert_same(grid, schema.read_partial(run_file, schema.SliceRandom, grid.group(STEP)))
    assert schema.read_partial(run_file, schema.Grid, "probe/nowhere") is None
    group = schema.Pca.group()  # a grid nested in a part: its own required fields
    schema.write(run_file, _sample(schema.Pca, np.random.default_rng(4)))
    store.commit(run_file, lambda tx: tx.delete(f"{group}/coords"), durable=False)
    with pytest.raises(StaleError, match="'coords'"):
        schema.read(run_file, schema.Pca)
    assert schema.read_partial(run_file, schema.Pca, group) is None  # unreadable: None


def test_part_names_and_groups():
    assert schema.part_class("top") is schema.Top
    with pytest.raises(schema.LandscapeError, match="unknown probe part 'tops'"):
        schema.part_class("tops")
    with pytest.raises(schema.LandscapeError, match="give a step"):
        schema.Top.group()
    assert schema.Pca.group(3) == "probe/run/pca"


def test_the_fingerprint_follows_settings_version_and_inputs():
    fp = schema.fingerprint(schema.Top, {"k": 3}, {})
    assert fp == schema.fingerprint(schema.Top, {"k": 3}, {})
    assert len({fp, schema.fingerprint(schema.Top, {"k": 4}, {}),
                schema.fingerprint(schema.Trace, {"k": 3}, {}),
                schema.fingerprint(schema.Top, {"k": 3}, {"slq": "ab"})}) == 4
    assert schema.settings_json({"b": np.float64(1.5), "a": np.arange(2)}) == \
        '{"a":[0,1],"b":1.5}'
