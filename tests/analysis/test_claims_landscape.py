"""Claims 2, 3 and 4 on synthetic seeds that should hold, should not, and cannot tell."""

import dataclasses
import json

import numpy as np
import pytest
from helpers import StoredRun, grouped, u_like, v_like, with_bulk

from landscape.analysis import claims
from landscape.analysis.claims import FAILS, HOLDS, INCONCLUSIVE, UNDERPOWERED
from landscape.analysis.series import UVInputs
from landscape.runfile.schema import StaleError

SEEDS = (0, 1, 2)


@pytest.fixture(autouse=True)
def _fewer_power_trials(monkeypatch):
    monkeypatch.setattr(claims, "POWER_TRIALS", 40)  # claim 2's power: enough to tell 0.8


def _three(t, level=7.0):
    a, b = 0.25 * t[-1], 0.6 * t[-1]
    return np.where(t < a, level - 0.3 * t / a,
                    np.where(t < b, level - 0.3 + 0.5 * (t - a) / (b - a), level + 0.2))


def _curves(shape, n=12, seeds=SEEDS, noise=0.02):
    t = np.linspace(0, 50, n)
    out = []
    for s in seeds:
        rng = np.random.default_rng(10 * s + n)
        y = (_three(t) if shape == "three" else 7.0 + 0.4 * t / 50) + 0.05 * s
        out.append({"seed": s, "name": f"run{s}", "steps": list(range(n)), "epoch": t,
                    "entropy": y + rng.normal(0, noise, n), "se": np.zeros(n),
                    "source": "exact", "stats": [None] * n})
    return out


# ------------------------------------------------------------------------------ claim 2


def test_claim2_rule_both_ways_and_undecided():
    verdict, d = claims.phases_verdict(_curves("rise"), _curves("three"))
    assert verdict == HOLDS and d["reads"] == "entropy_abs"
    assert d["paired"]["three_phases"]["mean"] == 1.0  # Looped 1, Single 0 on every seed
    assert d["paired"]["three_phases"]["signs"] == {"positive": 3, "negative": 0, "n": 3}
    verdict, d = claims.phases_verdict(_curves("rise"), _curves("rise"))
    assert verdict == FAILS and d["power"]["power"] >= 0.8  # could have seen them: fails
    assert claims.phases_verdict(_curves("three"), _curves("three"))[0] == INCONCLUSIVE
    verdict, d = claims.phases_verdict(_curves("rise", n=60), _curves("three", n=60), trials=5)
    assert verdict == HOLDS and len(d["per_seed"]["looped"]) == 3
    assert all(r["rise"] > 0.3 and r["drop"] > 0.15 for r in d["per_seed"]["looped"])


def test_claim2_not_found_is_inconclusive_where_the_rule_had_no_power():
    # heavy seed noise: no phases found, but phases of that size could not have been seen
    verdict, d = claims.phases_verdict(_curves("rise", noise=0.4), _curves("rise", noise=0.4))
    assert not any(r["three_phases"] for r in d["per_seed"]["looped"])
    assert verdict == INCONCLUSIVE and d["power"]["power"] < 0.8
    assert f"{d['power']['power']:.2f}" in d["reason"]
    assert d["power"]["per_seed"][0]["sigma"] > 0.3
    # too few checkpoints on the same noise as the decided case above: inconclusive too
    verdict, d = claims.phases_verdict(_curves("rise", n=6), _curves("rise", n=6))
    assert verdict == INCONCLUSIVE and d["power"]["power"] == 0.0  # no 3-piece fit on 6
    assert "power" in d["reason"] and "0.00" in d["reason"]
    # a larger measured size raises the power (it is simulated at the measured size)
    lo = _curves("rise", noise=0.1)[0]
    small = claims.phase_power_of(lo, 0.1)
    big = claims.phase_power_of(dict(lo, entropy=lo["entropy"] * 3), 0.1)
    assert small["drop"] == claims.SMALLEST_EFFECT["2"] < small["rise"] < big["rise"]
    assert big["power"] > small["power"]
    one_seed = claims.phase_power_of(lo, None)  # no seed noise: the fit's residuals, estimated
    assert not one_seed["known_sigma"] and 0.05 < one_seed["sigma"] < 0.2


def test_claim2_needs_a_window_that_reaches_the_end_of_training():
    lo, si = _curves("three"), _curves("rise")
    for c in lo + si:
        c["end_epoch"] = 100.0  # trained to epoch 100, probed to 50
    verdict, d = claims.phases_verdict(si, lo)
    assert verdict == INCONCLUSIVE and "would be: holds" in d["reason"]
    w = d["window"]["run0"]
    assert not w["covers_end"] and w["last_third"] == 0 and not w["sees_stabilization"]
    c = _curves("three", n=16)[0]  # probed to epoch 40 of 50: 3 in the last third
    cut = dict(c, epoch=c["epoch"][:-3], end_epoch=50.0)
    assert claims.phase_window(cut)["last_third"] == 3 and not claims.phase_window(cut)[
        "covers_end"]
    assert claims.phase_window(_curves("three")[0]) == {
        "epochs": np.linspace(0, 50, 12).tolist(), "end_epoch": 50.0, "covers_end": True,
        "last_third": 4, "sees_stabilization": True}


def test_seed_noise_ignores_offsets_and_adds_the_estimator_error():
    c = _curves("three", noise=0.0)
    assert claims.seed_noise(c) is None  # identical shapes, offsets only: no noise
    for x in c:
        x["se"] = np.full(x["epoch"].size, 0.03)
    assert claims.seed_noise(c) == pytest.approx(0.03)
    assert claims.seed_noise(c[:1]) is None


def _spectrum_run(arch, seed, eig_at, steps=(10, 20, 30), cv=None):
    probes = {}
    for st in steps:
        eig = eig_at(st, seed)
        probes[(st, "hessian")] = {"top": {"values": np.sort(eig)[::-1][:10]},
                                   "exact": {"eigvals": np.sort(eig)}}
        if cv is not None:
            probes[(st, "geometry")] = {"spread": {"cv": cv + 0.01 * seed,
                                                   "adam_cv": float("nan")}}
    return StoredRun(arch, seed, probes)


def test_claim2_end_to_end_on_exact_spectra_and_underpowered():
    # a spectrum whose entropy follows the three-phase curve: one outlier over a flat bulk
    def entropy_spectrum(target, p=200):
        lo, hi = 1e-4, 1e3
        for _ in range(80):  # bisect the outlier's weight for the entropy wanted
            mid = np.sqrt(lo * hi)
            e = np.concatenate([[mid], np.ones(p - 1)])
            q = e / e.sum()
            h = -np.sum(q * np.log(q))
            lo, hi = (mid, hi) if h > target else (lo, mid)
        return e

    steps = tuple(range(10, 130, 10))
    t = np.linspace(0, 50, len(steps))

    def looped_eig(st, seed):
        i = steps.index(st)
        return entropy_spectrum(_three(t, 5.0)[i] + 0.01 * np.sin(i + seed))

    def single_eig(st, seed):
        i = steps.index(st)
        return entropy_spectrum(5.0 + 0.2 * t[i] / 50 + 0.01 * np.cos(i + seed))

    lo = [_spectrum_run("looped", s, looped_eig, steps) for s in SEEDS]
    si = [_spectrum_run("single", s, single_eig, steps) for s in SEEDS]
    c = claims.judge_hessian_phases(grouped(single=si, looped=lo))
    assert c.verdict == HOLDS, c.value
    d = json.loads(claims.to_json([c]))[0]["details"]
    assert d["seeds"] == {"single": [0, 1, 2], "looped": [0, 1, 2]}
    assert d["checkpoints"]["looped_s0"] == [s / 10 for s in steps]  # epochs, to the end
    assert d["window"]["looped_s0"]["sees_stabilization"]
    assert len(d["per_seed"]["looped"]) == 3 and "erank_pos" in d["per_seed"]["looped"][0]
    assert d["positive_part"]["looped"]["measured"] and d["reads"] == "entropy_abs"
    assert d["paired"]["three_phases"]["signs"]["positive"] == 3 and "power" in d
    # an initial spectrum far off the curve is shown, not fitted: the verdict is unchanged
    def with_initial(run, seed):
        run.probes[(0, "hessian")] = {"top": {"values": np.ones(10)},
                                      "exact": {"eigvals": np.ones(200)}}  # log 200 nats
        run.probed_steps = [0, *run.probed_steps]
        return run

    lo0 = [with_initial(_spectrum_run("looped", s, looped_eig, steps), s) for s in SEEDS]
    c0 = claims.judge_hessian_phases(grouped(single=si, looped=lo0))
    assert c0.verdict == HOLDS, c0.value
    d0 = json.loads(claims.to_json([c0]))[0]["details"]
    assert d0["checkpoints"]["looped_s0"][0] == 0.0 and len(d0["checkpoints"]["looped_s0"]) == 13
    assert d0["per_seed"]["looped"][0]["initial"]["entropy"] == pytest.approx(np.log(200))
    assert d0["per_seed"]["looped"][0]["epochs"][0] == 1.0
    c1 = claims.judge_hessian_phases(grouped(single=si[:1], looped=lo[:1]))
    assert c1.verdict == UNDERPOWERED and "tentatively" in c1.value
    swapped = claims.judge_hessian_phases(grouped(single=lo, looped=si))
    assert swapped.verdict == FAILS


# ------------------------------------------------------------------------------ claim 3


def _uv_inputs(kind, seeds=SEEDS, cv=None):
    make = u_like if kind == "U" else v_like
    out = []
    for s in seeds:
        spec = make(s)
        out.append(UVInputs(s, spec, np.sort(spec)[::-1],
                            (0.05 if kind == "U" else 0.6) + 0.01 * s if cv is None else cv))
    return out


def test_claim3_rule_tells_u_from_v_both_ways():
    ev = claims.uv_evidence(_uv_inputs("U"), _uv_inputs("V"))
    assert ev["outcome"] == HOLDS, ev["votes"]
    assert ev["votes"] == {"kappa": 1, "sweep": 1} and ev["valley"] == "raw_top_k"
    assert len(ev["sweep"]) >= 13 and not any(r["saturated_both"] for r in ev["sweep"])
    assert all(r["vote"] == 1 for r in ev["sweep"])  # told apart at every eps
    p = ev["paired"]["kappa"]
    assert p["signs"] == {"positive": 3, "negative": 0, "n": 3} and p["lo"] > 0
    assert p["decision"] == "holds" and p["smallest_effect"] == claims.SMALLEST_EFFECT["3.kappa"]
    assert ev["paired"]["spread_cv"]["mean"] == pytest.approx(0.55)  # beside, not a vote
    rev = claims.uv_evidence(_uv_inputs("V"), _uv_inputs("U"))
    assert rev["outcome"] == FAILS and all(r["vote"] == -1 for r in rev["sweep"])


def test_claim3_no_difference_does_not_hold_and_a_noisy_one_cannot_tell():
    # identical valleys: the log-ratio is 0 on every seed, below the smallest effect
    ev = claims.uv_evidence(_uv_inputs("U"), _uv_inputs("U"))
    assert ev["outcome"] == FAILS and ev["votes"] == {"kappa": -1, "sweep": -1}
    # Looped more V on two seeds, less on the third: the interval spans 0 and log 1.5
    mixed = [_uv_inputs("V")[0], _uv_inputs("U")[1], _uv_inputs("V")[2]]
    ev = claims.uv_evidence(_uv_inputs("U"), mixed)
    assert ev["votes"]["kappa"] == 0 and ev["outcome"] == INCONCLUSIVE
    assert ev["paired"]["kappa"]["signs"]["positive"] == 2


def test_claim3_saturated_sweep_is_not_counted():
    # a continuous bulk through every eps: both saturate, the sweep cannot vote
    def bulk(seed):
        return np.concatenate([[1.0], np.geomspace(1e-6, 0.9, 300)]) * (1 + 0.01 * seed)

    s = [UVInputs(i, bulk(i), np.sort(bulk(i))[::-1], np.nan) for i in SEEDS]
    ev = claims.uv_evidence(s, s)
    assert ev["votes"]["sweep"] is None and ev["paired"]["spread_cv"] is None
    assert all(r["saturated_both"] and r["vote"] is None for r in ev["sweep"])


def test_claim3_votes_left_are_not_one_measurement_twice():
    # random valleys over a bulk: the top-k kappa and the sweep's kappa at a shared eps order
    # some pairs of spectra oppositely, so no one function of the numbers gives both votes
    from landscape.geometry import uv_measures as uv

    rng = np.random.default_rng(7)
    spectra = [with_bulk(np.concatenate([[1.0], 10 ** rng.uniform(-rng.uniform(0.2, 3.5), 0,
                                                                   rng.integers(6, 30))]),
                         p=60, seed=i) for i in range(40)]
    k = uv.NO_EDGE_K
    top = np.log([uv.outlier_kappa(np.sort(x)[::-1], k) for x in spectra])
    swept = np.log([uv.sweep(x, 1.0, [1e-3])[0].kappa for x in spectra])
    assert not np.allclose(top, swept)
    flips = [(i, j) for i in range(40) for j in range(40)
             if top[i] > top[j] + 0.5 and swept[i] < swept[j] - 0.5]
    assert flips
    # a pair of such spectra as Single (j) and Looped (i) on three seeds: the votes disagree
    # (at the common bulk edge the rule finds for them, k = 23, as well as at the top 5)
    i, j = flips[0]

    def runs(x):
        return [UVInputs(s, x * (1 + 0.01 * s), np.sort(x * (1 + 0.01 * s))[::-1], np.nan)
                for s in SEEDS]

    ev = claims.uv_evidence(runs(spectra[j]), runs(spectra[i]))
    assert ev["votes"] == {"kappa": 1, "sweep": -1}  # one says more V, the other less


def _no_edge(kind, seed):
    """A trained network's kind of spectrum: no gap between the top values and the bulk
    (continuous through every eps), the top five uniform (U) or spread (V)."""
    top = (np.array([1.0, 0.95, 0.9, 0.86, 0.82]) if kind == "U"
           else np.array([1.0, 0.5, 0.25, 0.125, 0.0625])) * (1 + 0.02 * seed)
    bulk = np.geomspace(1e-6, top[-1] * 0.95, 400)
    spec = np.concatenate([top, bulk, -bulk[:100]])
    return UVInputs(seed, spec, np.sort(spec)[::-1], np.nan)


def test_claim3_without_a_bulk_edge_still_decides_both_ways():
    # with the sweep saturated and no bulk edge, the outlier kappa at the top 5 and the
    # direction spread remain: the rule must still be able to say holds and does not hold
    u = [_no_edge("U", s) for s in SEEDS]
    v = [_no_edge("V", s) for s in SEEDS]
    from landscape.geometry import uv_measures as uv

    assert uv.outlier_k([x.top for x in u + v]) == (uv.NO_EDGE_K, False)
    for x, cv in ((u, 0.05), (v, 0.6)):
        x[:] = [dataclasses.replace(d, cv=cv + 0.01 * i) for i, d in enumerate(x)]
    ev = claims.uv_evidence(u, v)
    assert ev["votes"] == {"kappa": 1, "sweep": None}, ev["votes"]
    assert ev["outcome"] == HOLDS and ev["outlier_edge"] is False
    rev = claims.uv_evidence(v, u)
    assert rev["votes"]["kappa"] == -1 and rev["outcome"] == FAILS
    noisy = [u[0], v[1], v[2]]  # Looped more V on two seeds only
    assert claims.uv_evidence(u, noisy)["outcome"] == INCONCLUSIVE


def test_claim3_end_to_end_with_the_report_contract():
    def eig(kind):
        return lambda st, seed: (u_like if kind == "U" else v_like)(seed)

    si = [_spectrum_run("single", s, eig("U"), cv=0.05) for s in SEEDS]
    lo = [_spectrum_run("looped", s, eig("V"), cv=0.6) for s in SEEDS]
    c = claims.judge_landscape(grouped(single=si, looped=lo))
    assert c.verdict == HOLDS, c.value
    d = json.loads(claims.to_json([c]))[0]["details"]
    assert d["seeds"] == [0, 1, 2] and d["checkpoints"]["single_s1"] == [10, 20, 30]
    keys = {"eps_rel", "kappa_single", "kappa_looped", "count_single", "count_looped",
            "force_single", "force_looped"}
    assert len(d["sweep"]) >= 13 and all(keys <= set(r) for r in d["sweep"])
    assert len(d["per_seed"]) == 3 and "assumption_1" in d["per_seed"][0]
    assert d["paired"]["kappa"]["seeds"] == [0, 1, 2] and d["paired"]["kappa"]["lo"] > 0
    assert d["power"]["seeds_used"] == 3 and d["power"]["smallest_effect"] == pytest.approx(
        np.log(1.5)) and 0 < d["power"]["power"] < 0.8  # the pilot's spread: underpowered
    assert d["valley"]["definition"] == "raw_top_k" and "principal_angles" not in d["valley"]
    c2 = claims.judge_landscape(grouped(single=si[:2], looped=lo[:2]))
    assert c2.verdict == UNDERPOWERED
    c3 = claims.judge_landscape(grouped(single=lo, looped=si))
    assert c3.verdict == FAILS


# ------------------------------------------------------------------------------ claim 4


def test_claim4_rule_both_ways():
    def rows(vals):
        return [{"gain_per_oscillation": v} for v in vals]

    assert claims.hopping_verdict(rows([1.0, 1.1, 0.9]), rows([2.0, 2.1, 1.9]))[0] == HOLDS
    assert claims.hopping_verdict(rows([2.0, 2.1, 1.9]), rows([1.0, 1.1, 0.9]))[0] == FAILS
    assert claims.hopping_verdict(rows([1.0, 2.0, 1.5]), rows([1.2, 1.9, 1.4]))[0] \
        == INCONCLUSIVE


def test_claim4_without_trained_runs_reports_the_simulator_as_an_algebra_check():
    c = claims.judge_theory({})
    assert c.verdict == INCONCLUSIVE and "missing" in c.details
    sim = c.details["simulator"]
    assert sim["algebra_ok"] and sim["closed_form_rel_error"] < 1e-8
    assert sim["v_progress"] > sim["u_progress"] and "algebra" in c.value


def test_claim4_end_to_end_on_tiny_trained_runs(trained_runs, tmp_path):
    from landscape.probe import HessianSettings, ProbeSettings, probe
    from landscape.runfile import store
    from landscape.runs.run import Run

    paths = {a: store.copy_run(trained_runs[a], tmp_path / f"{a}.h5") for a in ("single",
                                                                                  "looped")}
    for arch in ("single", "looped"):
        probe(paths[arch], ProbeSettings(steps="8,16", hessian=HessianSettings(
            k_top=3, k_bottom=0, slq_runs=2, slq_steps=10, trace_hvps=4, exact="never")))
    runs = {a: Run.open(paths[a]) for a in ("single", "looped")}
    c = claims.judge_theory(grouped(single=runs["single"], looped=runs["looped"]))
    # runs trained without interventions: the rule cannot be read, whatever the hopping
    # between checkpoints says (beside, no vote)
    assert c.verdict == INCONCLUSIVE and "intervention" in c.details["missing"]
    assert c.details["per_step"] == {0: {"single": None, "looped": None}}  # no windows
    between = c.details["between_checkpoints"]
    assert "no vote" in between["label"]
    t = between["trained"]
    for arch in ("single", "looped"):
        x = t[arch][0]
        assert x["steps"] == [int(runs[arch].steps[1]), int(runs[arch].steps[2])]
        assert 0 <= x["hop_fraction"] <= 1 and np.isfinite(x["gain_per_oscillation"])
    json.dumps(json.loads(claims.to_json([c])))


def test_sweep_figure_from_stored_spectra():
    from landscape.analysis import series
    from landscape.draw import figures, plot

    si = [_spectrum_run("single", s, lambda st, seed: u_like(seed)) for s in SEEDS]
    lo = [_spectrum_run("looped", s, lambda st, seed: v_like(seed)) for s in SEEDS]
    sw = series.uv_sweep(si, lo)
    assert len(sw.single) == 3 and sw.single[0].step == 30
    assert np.all(sw.looped[0].kappa > sw.single[0].kappa)
    figs = figures.valley_sweep(grouped(single=si, looped=lo))
    assert set(figs) == {"valley_sweep"} and len(figs["valley_sweep"].axes) == 3
    assert plot.caption(figs["valley_sweep"]).endswith(
        "data: Single-Attn, seed 0; Single-Attn, seed 1; Single-Attn, seed 2; Looped-Attn, "
        "seed 0; Looped-Attn, seed 1; Looped-Attn, seed 2.")
    with pytest.raises(claims.LandscapeError):
        series.uv_sweep(si, [])


def test_spectral_runs_are_grouped_apart_and_read_by_the_landscape_claims():
    from types import SimpleNamespace

    from landscape.analysis import series

    def run(name, arch, seed, probed=(10,)):
        return SimpleNamespace(name=name, arch=arch, custom=False, task_name="markov",
                               probed_steps=list(probed),
                               recipe=SimpleNamespace(train=SimpleNamespace(seed=seed),
                                                      task=SimpleNamespace(name="markov")))

    main = [run(f"markov_{a}_s0", a, 0) for a in ("single", "looped")]
    spec = [run(f"{series.SPECTRAL_PREFIX}{a}_s{s}", a, s) for a in ("single", "looped")
            for s in (2, 1)]
    g = series.group_runs(main + spec)
    assert [r.name for r in g["markov"]["single"]] == ["markov_single_s0"]
    assert [r.recipe.train.seed for r in series.landscape_runs(g, "looped")] == [1, 2]
    assert series.landscape_runs(series.group_runs(main), "single") == main[:1]


def test_exact_and_spread_parts_on_a_tiny_run(trained_runs, tmp_path):
    import torch

    from landscape.curvature.hessian import dense_hessian_reference, preconditioned_operator
    from landscape.curvature.spectral import DenseOperator, dense_matrix
    from landscape.geometry.uv_measures import expected_cv
    from landscape.probe import GeometrySettings, HessianSettings, ProbeSettings, probe
    from landscape.runfile import store
    from landscape.runs.run import Run

    path = store.copy_run(trained_runs["looped"], tmp_path / "looped.h5")
    settings = ProbeSettings(steps="16", hessian=HessianSettings(
        k_top=4, k_bottom=0, slq_runs=2, slq_steps=10, trace_hvps=4, exact="always",
        dtype="float64"), geometry=GeometrySettings(grid=3, width_points=5, width_dirs=1,
                                                     spread_k=3, spread_dirs=8))
    probe(path, settings)
    run = Run.open(path)
    ex, sp = run.part("exact", 16), run.part("spread", 16)
    params = run.params(16, dtype=torch.float64)
    loss = run.loss_fn("probe", step=16)
    h = dense_hessian_reference(loss, params).numpy()
    np.testing.assert_allclose(ex.eigvals, np.linalg.eigvalsh(h), atol=1e-8 * abs(h).max())
    w, v = np.linalg.eigh(h)
    overlap = np.abs(ex.vectors.astype(float) @ v[:, ::-1][:, :4])
    np.testing.assert_allclose(np.diag(overlap), 1.0, atol=1e-3)
    v_adam, step = run.adam_state(16)
    beta2 = run.recipe.train.beta2
    pre = dense_matrix(preconditioned_operator(DenseOperator(torch.as_tensor(h)),
                                               torch.as_tensor(v_adam),
                                               eps=1e-8, step=step, beta2=beta2))
    np.testing.assert_allclose(ex.adam_eigvals, np.linalg.eigvalsh(pre.numpy()),
                               atol=1e-7 * abs(pre.numpy()).max())
    assert ex.adam_step == step >= 1
    assert sp.source == "exact" and sp.k == 3 and sp.rises.shape == (8,)
    assert sp.adam_rises.shape == (8,) and np.isfinite(sp.adam_cv)
    # rises at the distance where the top direction rises by delta: near the quadratic's
    quad = 0.5 * sp.radius**2 * np.sort(ex.eigvals)[::-1][:3]
    assert quad.min() * 0.5 < np.median(sp.rises) < quad.max() * 2
    assert 0 <= sp.cv < 2 * expected_cv(np.abs(quad)) + 0.5


class _DamagedRun(StoredRun):
    """A run whose exact spectrum at one checkpoint another version wrote."""

    def part(self, name, step=-1):
        if name == "exact" and step == 20:
            raise StaleError("stored 'exact' has no 'eigvals': written by another version")
        return super().part(name, step)


def test_a_damaged_part_is_reported_while_one_not_probed_leaves_the_claim_open():
    def eig(st, seed):
        return u_like(seed)

    si = [_spectrum_run("single", s, eig) for s in SEEDS]
    lo = [_spectrum_run("looped", s, eig) for s in SEEDS]
    unprobed = [StoredRun("looped", s, {}) for s in SEEDS]
    two = [_spectrum_run("looped", s, eig, steps=(10, 20)) for s in SEEDS]
    assert claims.judge_landscape(grouped(single=si, looped=unprobed)).verdict == INCONCLUSIVE
    c = claims.judge_hessian_phases(grouped(single=si, looped=two))
    assert c.verdict == INCONCLUSIVE and "phases need 3" in c.details["missing"]
    damaged = [_DamagedRun("looped", s, x.probes) for s, x in zip(SEEDS, lo)]
    for judge in (claims.judge_landscape, claims.judge_hessian_phases):
        with pytest.raises(StaleError, match="another version"):
            judge(grouped(single=si, looped=damaged))


def test_the_figures_phase_fit_starts_after_initialisation_too():
    from landscape.analysis import series

    run = _spectrum_run("looped", 0, lambda st, seed: u_like(seed + st), steps=(0, 10, 20, 30))
    ph = series.phases_of(run)
    assert ph.epochs.tolist() == [1.0, 2.0, 3.0]  # step 0 is drawn (entropy_series), not fitted
    assert series.entropy_series(run).epoch.tolist() == [0.0, 1.0, 2.0, 3.0]
