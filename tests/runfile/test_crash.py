"""A training process killed with SIGKILL at random moments resumes with nothing lost."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from helpers import SMALL, same_run

from landscape.runfile import store
from landscape.runs.run import Run

ARGS = [*SMALL, "--epochs", "24", "--every", "2", "-q", "--model", "shift",
        "--set", "shift.at_step=20"]


def _train(out, resume):
    cmd = [sys.executable, "-m", "landscape", "train", *ARGS, "--out", str(out)]
    if resume:
        cmd = [sys.executable, "-m", "landscape", "train", "--resume", "--out", str(out), "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(path, proc, timeout=60):
    t0 = time.perf_counter()
    while not path.exists() and proc.poll() is None and time.perf_counter() - t0 < timeout:
        time.sleep(0.01)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path):
    ref = tmp_path / "ref.h5"
    proc = _train(ref, resume=False)
    _wait_for(ref, proc)
    t0 = time.perf_counter()
    reads = 0
    deadline = t0 + 120
    # a reader while training writes: always a consistent file (each open is a snapshot; a
    # later one may see a newer, longer file); bounded, so a hung trainer fails the test
    while proc.poll() is None and time.perf_counter() < deadline:
        run = Run.open(ref)
        assert len(run.steps) == len(run.loops) == len(run.metrics["step"]) >= 1
        assert run.trajectory().shape[0] >= len(run.steps)
        reads += 1
        time.sleep(0.02)
    assert proc.wait(10) == 0 and reads > 3
    train_time = time.perf_counter() - t0  # from the file's creation to the end
    rng = random.Random(1234)
    out, kills, committed = tmp_path / "cut.h5", 0, []
    for i in range(10):
        proc = _train(out, resume=out.exists())
        if i % 3:  # most kills land during training, some during start-up and creation
            _wait_for(out, proc)
        try:
            _, err = proc.communicate(timeout=rng.uniform(0.05, 0.7 * train_time))
            assert proc.returncode == 0, err.decode()
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
        if out.exists():  # never unreadable, never shorter than before
            run = Run.open(out)
            committed.append(len(run.steps))
            if run.status == "complete":
                break
    else:
        assert _train(out, resume=True).wait(120) == 0
    assert kills >= 2, "the kills all came too late to test anything"
    assert committed == sorted(committed)
    assert store.writer_holding(out) is None
    a, b = Run.open(ref), Run.open(out)
    assert b.status == "complete"
    same_run(ref, out)
    assert [e for e in a.events if e["kind"] == "shift"] == [
        e for e in b.events if e["kind"] == "shift"]
