"""`landscape export --tensorboard`: the events read back with TensorBoard's own reader."""

import sys

import numpy as np
import pytest
from click.testing import CliRunner

from landscape.cli import main
from landscape.errors import LandscapeError
from landscape.runs.run import Run

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip "
                                          "install 'looped-landscape[tensorboard]')")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

from landscape.draw import tensorboard as tb  # noqa: E402


def _events(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def _scalar(acc, tag):
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_export_writes_probe_numbers_metrics_and_spectra(probed_own_run, tmp_path):
    run = Run.open(probed_own_run)
    done = tb.export_tensorboard(run, tmp_path / "tb")
    acc = _events(tmp_path / "tb")
    tags = acc.Tags()
    assert set(done.scalars) == set(tags["scalars"])
    steps = list(run.probed_steps)
    assert steps == [0, 3, 6]
    for step in steps:
        h = run.hessian(step)
        sharp, trace, valley = h["sharpness"], h["trace"], run.valley(step)
        assert _scalar(acc, "curvature/lambda_max")[step] == pytest.approx(sharp.lambda_max)
        assert _scalar(acc, "curvature/trace")[step] == pytest.approx(trace.estimate)
        assert _scalar(acc, "curvature/kappa")[step] == pytest.approx(valley.kappa, rel=1e-6)
        for name, block in h["blocks"].groups.items():
            got = _scalar(acc, f"blocks/{name}/top")[step]
            assert got == pytest.approx(float(np.max(block.values)), rel=1e-6)
    edges = _scalar(acc, "curvature/adam_edge")  # AdamW: the edge on the preconditioned H
    for step in steps:
        assert edges[step] == pytest.approx(run.hessian(step)["sharpness"].adam_threshold)
        assert _scalar(acc, "curvature/edge")[step] == pytest.approx(
            run.hessian(step)["sharpness"].threshold)
    loss = _scalar(acc, "metrics/loss")
    stored = run.metrics["loss"]
    assert sorted(loss) == [3, 6]  # step 0 has no loss (NaN), so no point
    assert loss[6] == pytest.approx(stored[-1], rel=1e-6)
    assert "metrics/step" not in tags["scalars"] and "metrics/lr" in tags["scalars"]
    # spectra: one histogram per probed checkpoint holding all P eigenvalues
    hist = acc.Histograms("spectrum/hessian")
    assert [e.step for e in hist] == steps
    eig = h["exact"].eigvals
    last = hist[-1].histogram_value
    assert last.num == run.layout.size and last.max == pytest.approx(eig.max())
    assert last.sum == pytest.approx(eig.sum(), rel=1e-5, abs=1e-6)
    with_adam = [s for s in steps if run.hessian(s)["exact"].adam_eigvals is not None]
    assert done.histograms == {"spectrum/hessian": 3, "spectrum/adam": len(with_adam)}
    assert [e.step for e in acc.Histograms("spectrum/adam")] == with_adam


def test_an_slq_density_becomes_a_histogram_of_eigenvalue_counts(tmp_path):
    from landscape.analysis.series import SLQDensity

    nodes = np.array([[-1.0, 0.5, 2.0], [0.0, 1.0, 3.0]])
    weights = np.array([[0.2, 0.5, 0.3], [0.25, 0.25, 0.5]])
    writer = tb._writer(tmp_path / "slq")
    tb._slq_histogram(writer, SLQDensity(nodes, weights, 40), 7, bins=8)
    writer.close()
    h = _events(tmp_path / "slq").Histograms("spectrum/hessian")[0].histogram_value
    assert h.num == pytest.approx(40)  # the weights of each run sum to 1: P eigenvalues
    assert h.min == -1.0 and h.max == 3.0
    counts = np.histogram(nodes.ravel(), bins=8, weights=weights.ravel() / 2 * 40)[0]
    np.testing.assert_allclose(h.bucket, counts)


def test_an_unprobed_run_exports_its_metrics_and_an_empty_one_refuses(tmp_path):
    from own_model import D, build, data, train

    import landscape

    train(tmp_path / "a.h5", 2)
    acc_dir = tmp_path / "tb"
    done = tb.export_tensorboard(Run.open(tmp_path / "a.h5"), acc_dir)
    assert set(done.scalars) == {"metrics/loss", "metrics/lr"} and not done.histograms
    with landscape.Recorder(tmp_path / "b.h5", build(d=D), probe=data(4), loss="next_token",
                            factory="own_model:build", factory_kwargs={"d": D}) as rec:
        rec.checkpoint(0)  # no optimiser, no metrics, no probe
    with pytest.raises(LandscapeError, match="nothing|no metrics"):
        tb.export_tensorboard(Run.open(tmp_path / "b.h5"), tmp_path / "tb2")


def test_cli_export_and_a_missing_package(probed_own_run, tmp_path, monkeypatch):
    r = CliRunner().invoke(main, ["export", str(probed_own_run), "--tensorboard",
                                  str(tmp_path / "tb")])
    assert r.exit_code == 0, r.output
    assert "curvature/lambda_max" in _events(tmp_path / "tb").Tags()["scalars"]
    assert "histograms" in r.output
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    r = CliRunner().invoke(main, ["export", str(probed_own_run), "--tensorboard",
                                  str(tmp_path / "tb3")])
    assert r.exit_code == 2 and "looped-landscape[tensorboard]" in r.output
    assert len(r.output.strip().splitlines()) == 1
