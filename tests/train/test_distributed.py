"""Several processes against one: sharded Hessians and grids, data-parallel training, lost ranks.

Library checks run two gloo ranks with ``torch.multiprocessing.spawn`` and a ``file://``
store; command checks run ``torchrun --standalone --nproc_per_node=2 -m landscape ...``;
the lost-rank check starts two ranks by hand (the environment torchrun would set) so
that nothing but our own code reports the loss. Every comparison is against the same
computation in one process.

Measured tolerances, 2 ranks vs 1 (float32, one thread per process, the tiny SHIFT recipe
on the copy task below, whose sequences score 1 to 6 tokens): after 96 steps the
parameters differ by at most 2.4e-7 (weights up to 1.25), losses and gradient norms by
2e-7 relative, accuracies not at all; probed Hessian eigenvalues, traces and SLQ nodes by
1e-7 relative, and grids along fixed directions are bit-identical. (Markov, 12 scored
tokens in every sequence: 1.3e-7 after 96 steps, 6.4e-7 after 320.) The asserts allow
1e-5 relative (plus 1e-6 absolute on the weights); weighting the two shares equally
instead of by their tokens moves the weights by 2.5e-2 and fails. In float64 the sharded
Hessian equals the dense reference to 1e-12.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers import same_run, tiny_recipe

from landscape.curvature.hessian import HessianOperator, dense_hessian_reference
from landscape.curvature.objective import detached_params
from landscape.curvature.spectral import dense_matrix, hutchpp, lanczos, slq
from landscape.errors import LandscapeError
from landscape.geometry.slices import loss_grid, make_axis
from landscape.probe import GeometrySettings, HessianSettings, ProbeSettings, probe
from landscape.runfile import store
from landscape.runs.run import Run
from landscape.train import distributed
from landscape.train.distributed import (
    Launch,
    Ranks,
    launch_env,
    process_group,
    shard_range,
    sharded_loss_fn,
    sharded_loss_grid,
    strided,
)
from landscape.train.model import LoopedTransformer, ModelConfig
from landscape.train.recipe import load_recipe
from landscape.train.split_loss import make_loss_fn
from landscape.train.tasks.base import IGNORE, Split
from landscape.train.trainer import Trainer, train

F64 = torch.float64
BIN = Path(sys.executable).parent
RTOL = 1e-5  # 2 ranks vs 1, float32 (see the module docstring for what was measured)
COPY = {  # 1 to 6 scored tokens a sequence: the shares of a batch weigh differently
    "name": "tiny_copy",
    "task": {"name": "copy", "n_train": 128, "n_test": 64, "train_max_len": 6},
    "model": {"d_model": 8, "n_heads": 2},
    "train": {"batch_size": 16, "epochs": 12, "checkpoint_every": 4, "eval_every": 4,
              "probe_size": 16, "lr": 3e-3},  # 96 steps, 25 commits
    "shift": {"enabled": True, "at_step": 16, "split": ""},
}


def _env(**extra) -> dict[str, str]:
    """The environment for child processes: one thread, no inherited job variables."""
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _torchrun(*args, timeout=120) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "landscape",
           *map(str, args)]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _toml(tables: dict) -> str:
    lines = []
    for key, value in tables.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in tables.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return f'"{v}"' if isinstance(v, str) else repr(v)


def _close(a, b, what, rtol=RTOL, atol=0.0):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.nanmax(np.abs(b))) if b.size else 0.0, 1e-30)
    err = float(np.nanmax(np.abs(a - b))) if b.size else 0.0
    assert np.array_equal(np.isnan(a), np.isnan(b)), f"{what}: NaNs differ"
    assert err <= rtol * scale + atol, f"{what}: max |2 ranks - 1| = {err:.3g} (scale {scale:.3g})"


# ---------------------------------------------------------------------------------------
# helpers without a process group
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shares_cover_everything_once_and_balance(world):
    for n in range(0, 13):
        parts = [list(shard_range(n, r, world)) for r in range(world)]
        assert sum(parts, []) == list(range(n))  # contiguous, in rank order
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        cells = np.concatenate([strided(n, r, world) for r in range(world)])
        assert sorted(cells.tolist()) == list(range(n))
    with pytest.raises(LandscapeError):
        shard_range(4, 2, 2)


def test_launch_environment():
    assert launch_env({}) is None and launch_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert launch_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Launch(3, 4, 1)
    assert launch_env({"WORLD_SIZE": "2", "RANK": "1"}) == Launch(1, 2, 1)
    for bad in ({"WORLD_SIZE": "2"}, {"WORLD_SIZE": "2", "RANK": "2"},
                {"WORLD_SIZE": "two", "RANK": "0"}):
        with pytest.raises(LandscapeError, match="torchrun"):
            launch_env(bad)
    assert distributed.timeout_seconds({"LANDSCAPE_DIST_TIMEOUT": "12.5"}) == 12.5
    assert distributed.timeout_seconds({}) == distributed.DEFAULT_TIMEOUT_S
    with pytest.raises(LandscapeError, match="LANDSCAPE_DIST_TIMEOUT"):
        distributed.timeout_seconds({"LANDSCAPE_DIST_TIMEOUT": "0"})


def test_what_counts_as_a_lost_rank():
    gloo = RuntimeError("[pair.cc:537] Read error [127.0.0.1]:1686: Connection reset by peer.")
    assert distributed.is_comm_failure(gloo)
    assert distributed.is_comm_failure(RuntimeError("Timed out waiting 3000ms for recv"))
    assert not distributed.is_comm_failure(RuntimeError("mat1 and mat2 shapes cannot be "
                                                        "multiplied (2x3 and 4x5)"))
    assert not distributed.is_comm_failure(ValueError("gloo"))


def test_batch_must_divide_by_the_ranks(tmp_path):
    ranks = Ranks(0, 3, 0, torch.device("cpu"), "gloo", 60.0)  # no collective is reached
    with pytest.raises(LandscapeError, match="batch_size=16 does not divide by the 3 ranks"):
        Trainer(tiny_recipe(), tmp_path / "r.h5", ranks=ranks)
    assert not (tmp_path / "r.h5").exists()


# ---------------------------------------------------------------------------------------
# the sharded operator and grid: two spawned gloo ranks
# ---------------------------------------------------------------------------------------


def _problem():
    """A float64 Looped-Attn model and 7 sequences with unequal scored-token counts."""
    torch.manual_seed(0)
    model = LoopedTransformer(ModelConfig(d_model=4, n_heads=2, loops=2), 5, 6)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if name.endswith("ln1.weight") else 0.0, 0.5)
    model = model.to(F64).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 5, (7, 6), generator=g)
    y = torch.roll(x, -1, dims=1)
    y[:, -1] = IGNORE
    y[:4, :3] = IGNORE  # rank 0's share (rows 0-3) scores 2 tokens a row, rank 1's 5
    return model, Split(x, y), detached_params(model)


def _plane(params):
    g = torch.Generator().manual_seed(2)
    return [{k: torch.randn(v.shape, generator=g, dtype=F64) * 0.3 for k, v in params.items()}
            for _ in range(2)]


def _spectra(op):
    top = lanczos(op, k_top=3, k_bottom=1, seed=5)
    return {"dense": dense_matrix(op), "top": top.top_values, "bottom": top.bottom_values,
            "vectors": top.top_vectors, "trace": hutchpp(op, 30, seed=3).estimate,
            "slq": slq(op, n_runs=2, n_steps=12, seed=4).nodes, "loss": op.loss,
            "gradient": op.gradient, "determinism": op.check_determinism()}


def _worker(rank, world, init, out):
    torch.set_num_threads(1)
    model, split, params = _problem()
    with process_group("cpu", init_method=init, rank=rank, world=world, timeout_s=60) as ranks:
        loss_fn = sharded_loss_fn(model, split, ranks)
        result = _spectra(HessianOperator(loss_fn, params, reduce=ranks.all_reduce_sum))
        result["local"] = dense_matrix(HessianOperator(loss_fn, params))  # this rank's share
        axis = make_axis(-1.0, 1.0, 5)
        result["grid"] = sharded_loss_grid(make_loss_fn(model, split), params, _plane(params),
                                           axis, axis[:3], ranks=ranks)
        result["sent"] = ranks.broadcast_object({"from": ranks.rank})

        def refuse():  # names the rank that entered: main_only lets only rank 0 in
            raise LandscapeError(f"the lock is held elsewhere (seen by rank {ranks.rank})")

        try:
            with ranks.main_only(refuse):
                result["main_only"] = "entered"
        except LandscapeError as e:
            result["main_only"] = str(e)
    torch.save(result, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("spawn")
    mp.spawn(_worker, args=(2, f"file://{out}/store", str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_sharded_hessian_is_the_whole_hessian(two_ranks):
    model, split, params = _problem()
    loss_fn = make_loss_fn(model, split)
    truth = dense_hessian_reference(loss_fn, params)
    one = _spectra(HessianOperator(loss_fn, params))
    for r, res in enumerate(two_ranks):
        err = float((res["dense"] - truth).abs().max() / truth.abs().max())
        assert err < 1e-12, f"rank {r}: sharded dense Hessian off by {err:.3g}"
        assert res["loss"] == pytest.approx(one["loss"], rel=1e-14)
        torch.testing.assert_close(res["gradient"], one["gradient"], rtol=1e-12, atol=1e-14)
        for key in ("top", "bottom", "slq"):
            np.testing.assert_allclose(res[key], one[key], rtol=1e-9, atol=1e-12, err_msg=key)
        assert res["trace"] == pytest.approx(one["trace"], rel=1e-10)
        assert res["determinism"] < 1e-12
    # each rank holds only its token-weighted share, and the shares add up to the whole
    shares = [res["local"] for res in two_ranks]
    torch.testing.assert_close(shares[0] + shares[1], truth, rtol=1e-12, atol=1e-12)
    assert float((shares[0] - truth).abs().max()) > 0.1 * float(truth.abs().max())
    # every rank took the same steps: bit-identical results
    for key in ("dense", "vectors", "gradient"):
        assert torch.equal(two_ranks[0][key], two_ranks[1][key]), key


def test_sharded_grid_equals_one_process(two_ranks):
    model, split, params = _problem()
    axis = make_axis(-1.0, 1.0, 5)
    one = loss_grid(make_loss_fn(model, split), params, _plane(params), axis, axis[:3])
    for res in two_ranks:
        np.testing.assert_array_equal(res["grid"], one)


def test_rank_zero_speaks_for_all(two_ranks):
    assert [res["sent"] for res in two_ranks] == [{"from": 0}, {"from": 0}]
    assert [res["main_only"] for res in two_ranks] == [
        "the lock is held elsewhere (seen by rank 0)"] * 2


# ---------------------------------------------------------------------------------------
# the commands under torchrun
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny SHIFT recipe on copy trained by one process (in here) and by two (torchrun)."""
    root = tmp_path_factory.mktemp("ddp")
    recipe = root / "tiny.toml"
    recipe.write_text(_toml(COPY))
    one = train(load_recipe(overrides=[COPY]), root / "one.h5")
    res = _torchrun("train", recipe, "--out", root / "two.h5", "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    return one, root / "two.h5", res, recipe


def test_two_ranks_train_like_one(runs):
    one, two, res, _ = runs
    a, b = Run.open(one), Run.open(two)
    assert b.status == "complete" and b.recipe == a.recipe
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.loops, b.loops)  # SHIFT switched at the same step
    _close(b.trajectory(), a.trajectory(), "parameters", atol=1e-6)
    _close(b.adam_state(-1)[0], a.adam_state(-1)[0], "AdamW second moment", rtol=1e-4)
    for key in a.metrics:
        if key.endswith("acc"):
            np.testing.assert_allclose(b.metrics[key], a.metrics[key], atol=1e-2, err_msg=key)
        elif key not in ("wall", "tokens_per_s"):
            _close(b.metrics[key], a.metrics[key], key)
    (dp,) = [e for e in b.events if e["kind"] == "data_parallel"]
    assert dp == {"kind": "data_parallel", "step": 0, "world": 2, "backend": "gloo"}
    assert [e["step"] for e in b.events if e["kind"] == "shift"] == [16]
    assert res.stdout.count("wrote") == 1  # rank 0 alone reports
    assert sorted(p.name for p in two.parent.iterdir() if p.name.startswith("two")) == [
        "two.h5", "two.h5.d"]  # the run and its folder; no lock or temporary left behind


def test_two_ranks_probe_like_one(runs, tmp_path):
    one = runs[0]
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    store.copy_run(one, a)
    store.copy_run(one, b)
    hs = HessianSettings(k_top=3, k_bottom=1, slq_runs=2, slq_steps=12, trace_hvps=12,
                         exact="never")
    gs = GeometrySettings(grid=5, width_points=7, width_dirs=1, loops_max=2, shared_plane="init")
    probe(a, ProbeSettings(steps="16,32", hessian=hs, geometry=gs))
    res = _torchrun("probe", b, "--steps", "16,32", "--k", 3, "--k-bottom", 1, "--slq-runs", 2,
                    "--slq-steps", 12, "--trace-hvps", 12, "--exact", "never", "--grid", 5,
                    "--shared-plane", "init")
    assert res.returncode == 0, res.stderr[-3000:]
    ra, rb = Run.open(a), Run.open(b)
    for s in (16, 32):
        ha, hb = ra.hessian(s), rb.hessian(s)
        for part, key in (("top", "values"), ("top", "bottom_values"), ("trace", "estimate"),
                          ("slq", "nodes"), ("slq", "weights"), ("sharpness", "lambda_max")):
            _close(getattr(hb[part], key), getattr(ha[part], key), f"step {s} {part}/{key}")
        assert hb["top"].hvps == ha["top"].hvps
        assert hb["top"].fingerprint == ha["top"].fingerprint  # one probe, however many ranks
        ga, gb = ra.geometry(s), rb.geometry(s)
        np.testing.assert_array_equal(gb["slice_random"].loss, ga["slice_random"].loss)
        np.testing.assert_array_equal(gb["slice_shared"].loss, ga["slice_shared"].loss)
        _close(gb["slice_river_valley"].loss, ga["slice_river_valley"].loss, "slice")
    sa, sb = ra.part("switch"), rb.part("switch")
    for name in ("before", "after"):
        _close(getattr(sb, name).values, getattr(sa, name).values, f"switch {name}")
    np.testing.assert_array_equal(rb.part("pca").grid.loss, ra.part("pca").grid.loss)
    np.testing.assert_allclose(rb.part("qk_alignment").cosine, ra.part("qk_alignment").cosine,
                               rtol=1e-6)
    assert store.writer_holding(b) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_ranks_asked_for_cuda_without_it_are_refused_before_joining(runs, tmp_path,
                                                                    monkeypatch):
    path = tmp_path / "r.h5"
    store.copy_run(runs[0], path)
    before = path.read_bytes()
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(LandscapeError, match="needs a CUDA device"):
        probe(path, ProbeSettings(steps="last", device="cuda"))
    assert path.read_bytes() == before


# ---------------------------------------------------------------------------------------
# a rank that dies
# ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_lost_rank_ends_the_job_and_the_file_resumes(runs, tmp_path):
    """Rank 1 killed mid-run: rank 0 names it and stops; two ranks resume bit-identically."""
    _, two, _, recipe = runs
    out, port = tmp_path / "cut.h5", _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "landscape", "train", str(recipe), "--out", str(out), "-q"],
        env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                 MASTER_PORT=str(port), LANDSCAPE_DIST_TIMEOUT="30"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    t0 = time.monotonic()
    while procs[0].poll() is None and time.monotonic() - t0 < 60:  # until a few commits
        if out.exists() and Run.open(out).steps[-1] >= 16:
            break
        time.sleep(0.005)
    procs[1].send_signal(signal.SIGKILL)
    _, err = procs[0].communicate(timeout=60)
    procs[1].communicate()
    assert procs[0].returncode == 2, err
    last = err.strip().splitlines()[-1]  # (torch may log warnings before it)
    assert last.startswith("error: rank 0: a collective failed") and "Traceback" not in err, err
    assert "rank 1 of 2 exited or hung" in last and "--resume" in last, err
    cut = Run.open(out)
    assert cut.status == "training" and 16 <= cut.steps[-1] < 96, cut.steps
    assert store.writer_holding(out) is None
    res = _torchrun("train", "--resume", "--out", out, "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    b = Run.open(out)
    assert b.status == "complete"
    same_run(two, out)
    assert [e["kind"] for e in b.events] == ["data_parallel", "shift", "resume",
                                             "data_parallel"]
