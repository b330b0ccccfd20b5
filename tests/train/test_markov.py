"""Markov languages: truth of the predictive, the sampler, IC, splits and ceilings."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.special import gammaln

from landscape.errors import LandscapeError
from landscape.train.tasks.markov import (
    LANGUAGES,
    MarkovConfig,
    draw_language,
    generate,
    sample,
    true_predictive,
)

Z = 5.0  # z-score bound of every sampling-error tolerance below (two-sided, ~6e-7 per check)


def small(name="hybrid", **kw):
    return MarkovConfig.language(name, **{"n_train": 64, "n_test": 256, "seq_len": 24, **kw})


# --- the structure and the predictive ---------------------------------------------------


@pytest.mark.parametrize("name", list(LANGUAGES))
def test_predictive_rows_are_distributions(name):
    cfg = small(name)
    lang = draw_language(cfg)
    data = generate(cfg)
    p = true_predictive(cfg, lang, data.evals["all"].inputs)
    assert p.shape == (cfg.n_test, cfg.seq_len, cfg.n_base)
    assert p.min() >= 0.0
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=0, atol=1e-12)
    if cfg.n_fixed:
        assert lang.fixed_rows.shape == (
            cfg.n_modes,
            cfg.n_base ** (cfg.order - 1),
            cfg.n_fixed,
            cfg.n_base,
        )
        np.testing.assert_allclose(lang.fixed_rows.sum(-1), 1.0, rtol=0, atol=1e-12)
    for succ in lang.succ:  # a derangement of the deterministic group, per mode
        assert sorted(succ.tolist()) == list(range(cfg.n_det))
        assert not np.any(succ == np.arange(cfg.n_det))


@pytest.mark.parametrize("name", ["fixed2", "modes"])
def test_warmup_positions_are_uniform(name):
    cfg = small(name)
    p = true_predictive(cfg, draw_language(cfg), generate(cfg).evals["all"].inputs)
    warm = cfg.warmup - 1  # targets x_1 .. x_{warmup-1} are uniform
    assert warm >= 1
    np.testing.assert_array_equal(p[:, :warm], 1.0 / cfg.n_base)
    assert np.all(p[:, warm:].max(-1) > 1.0 / cfg.n_base)  # every chain row is non-uniform


def test_per_mode_structure_differs():
    lang = draw_language(MarkovConfig.language("modes"))
    assert len({tuple(s) for s in lang.succ}) > 1
    assert np.abs(lang.fixed_rows[0] - lang.fixed_rows[1]).max() > 0.1


# --- determinism ----------------------------------------------------------------------


def _tensors(data):
    out = [data.train.inputs, data.train.targets]
    for split in data.evals.values():
        out += [split.inputs, split.targets]
    return out


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = generate(small()), generate(small()), generate(small(seed=1))
    for x, y in zip(_tensors(a), _tensors(b)):
        assert torch.equal(x, y)
    np.testing.assert_array_equal(a.sample_info["test_ic"], b.sample_info["test_ic"])
    assert a.ceilings == b.ceilings and a.info == b.info
    assert not torch.equal(a.train.inputs, c.train.inputs)
    assert not torch.equal(a.evals["all"].inputs, c.evals["all"].inputs)


def test_test_set_does_not_depend_on_n_train():
    a, b = generate(small(n_train=16)), generate(small(n_train=100))
    assert torch.equal(a.evals["all"].inputs, b.evals["all"].inputs)
    np.testing.assert_array_equal(a.sample_info["test_ic"], b.sample_info["test_ic"])


def test_targets_are_next_inputs():
    split = generate(small()).train
    assert torch.equal(split.targets[:, :-1], split.inputs[:, 1:])
    assert split.n_scored == split.targets.numel()


# --- the sampler against the process it claims ------------------------------------------


def _transition_counts(cfg, x):
    """Counts [M, V, ..., V (order), V] of (mode, context..., current, next), chain steps only."""
    x = np.asarray(x)
    modes = x[:, 0] - cfg.n_base if cfg.n_modes > 1 else np.zeros(len(x), dtype=int)
    counts = np.zeros((cfg.n_modes,) + (cfg.n_base,) * (cfg.order + 1), dtype=np.int64)
    for t in range(cfg.warmup - 1, x.shape[1] - 1):  # x_{t+1} chain-generated
        key = (modes,) + tuple(x[:, t - j] for j in range(cfg.order - 1, -1, -1)) + (x[:, t + 1],)
        np.add.at(counts, key, 1)
    return counts


@pytest.mark.parametrize(
    "overrides",
    [
        {"n_det": 0, "n_ctx": 0, "n_fixed": 4, "alpha": 1.0},
        {"n_det": 0, "n_ctx": 0, "n_fixed": 3, "order": 2, "alpha": 1.0},
        {"n_det": 0, "n_ctx": 0, "n_fixed": 3, "order": 3, "alpha": 1.0},
        {"n_det": 0, "n_ctx": 0, "n_fixed": 3, "n_modes": 3, "alpha": 1.0},
    ],
    ids=["order1", "order2", "order3", "modes"],
)
def test_fixed_chain_frequencies_match_its_rows(overrides):
    cfg = MarkovConfig(n_train=3000, n_test=2, seq_len=40, leak=0.0, **overrides)
    lang = draw_language(cfg)
    train = generate(cfg).train
    x = np.concatenate([train.inputs.numpy(), train.targets[:, -1:].numpy()], 1)  # x_0 .. x_T
    counts = _transition_counts(cfg, x)  # [M, V.., V, V]
    rows = lang.fixed_rows.reshape(counts.shape)  # oldest context token = most significant
    n = counts.sum(-1, keepdims=True)
    assert n.min() >= 1000, "too few transitions per context for the tolerance to mean much"
    freq = counts / n
    tol = Z * np.sqrt(rows * (1 - rows) / n) + 1.0 / n
    worst = np.abs(freq - rows) / tol
    assert worst.max() <= 1.0, (
        f"frequency off by {np.abs(freq - rows).max():.4f} at {worst.argmax()}"
    )


def test_deterministic_chain_ceiling_closed_form():
    cfg = MarkovConfig(n_det=5, n_ctx=0, p_det=0.9, n_train=8, n_test=2000, seq_len=30)
    data = generate(cfg)
    closed = cfg.p_det + (1 - cfg.p_det) / cfg.n_base  # p(succ(i) | i) is the row maximum
    for name, ceil in data.ceilings.items():
        assert ceil["acc_expected"] == pytest.approx(closed, abs=1e-12), name
    n = data.evals["all"].n_scored  # realised: a binomial around the closed form
    assert abs(data.ceilings["all"]["acc"] - closed) < Z * math.sqrt(closed * (1 - closed) / n)
    surprisal = {-math.log(closed), -math.log((1 - cfg.p_det) / cfg.n_base)}
    ic = data.sample_info["test_ic"] * cfg.seq_len  # total surprisal, a sum of those two values
    k = (ic - cfg.seq_len * min(surprisal)) / (max(surprisal) - min(surprisal))
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)


@pytest.mark.parametrize("n_modes", [1, 3])
def test_deterministic_successors_are_followed_at_rate_p_det(n_modes):
    cfg = MarkovConfig(n_det=5, n_ctx=0, p_det=0.9, n_modes=n_modes, n_train=2000, seq_len=30)
    closed = cfg.p_det + (1 - cfg.p_det) / cfg.n_base
    succ = torch.from_numpy(draw_language(cfg).succ)  # [M, n_det]
    split = generate(cfg).train
    chain = slice(cfg.warmup - 1, None)  # positions whose target the chain drew
    mode = (
        split.inputs[:, :1] - cfg.n_base if n_modes > 1 else torch.zeros_like(split.inputs[:, :1])
    )
    cur, nxt = split.inputs[:, chain], split.targets[:, chain]
    for m in range(n_modes):
        rows = mode[:, 0] == m
        hits = (nxt[rows] == succ[m][cur[rows]]).double()
        n = hits.numel()
        assert n > 10_000
        rate = hits.mean().item()
        assert abs(rate - closed) <= Z * math.sqrt(closed * (1 - closed) / n), (m, rate, closed)


@pytest.mark.parametrize("name", ["hybrid", "incontext", "modes", "fixed2"])
def test_sampler_is_calibrated_to_the_true_predictive(name):
    """Sum over positions of 1{x_{t+1} = c} - p_t(c) is a martingale: mean 0, var sum p(1-p).

    The sampler draws in-context tokens from each sequence's own theta; the predictive is the
    posterior. A wrong posterior (or a wrong sampler) shows up as a z-score beyond Z.
    """
    cfg = MarkovConfig.language(name, n_train=8, n_test=3000)
    data = generate(cfg)
    split = data.evals["all"]
    p = true_predictive(cfg, draw_language(cfg), split.inputs)  # [N, T, V]
    onehot = np.eye(cfg.n_base)[split.targets.numpy()]
    z = (onehot - p).sum((0, 1)) / np.sqrt((p * (1 - p)).sum((0, 1)))
    assert np.abs(z).max() < Z, f"token frequencies off the predictive: z = {np.round(z, 2)}"
    hit = onehot[np.arange(p.shape[0])[:, None], np.arange(p.shape[1]), p.argmax(-1)]
    pmax = p.max(-1)
    z_acc = (hit - pmax).sum() / np.sqrt((pmax * (1 - pmax)).sum())
    assert abs(z_acc) < Z, f"argmax accuracy {hit.mean():.4f} vs ceiling {pmax.mean():.4f}"
    assert data.ceilings["all"]["acc_expected"] == pytest.approx(pmax.mean(), abs=1e-12)
    ties = (p == pmax[..., None]).sum(-1)
    realised = (np.take_along_axis(p, split.targets.numpy()[..., None], -1)[..., 0] == pmax)
    assert data.ceilings["all"]["acc"] == pytest.approx((realised / ties).mean(), abs=1e-12)
    logp = np.log(np.take_along_axis(p, split.targets.numpy()[..., None], -1))[..., 0]
    assert data.ceilings["all"]["loss"] == pytest.approx(-logp.mean(), abs=1e-12)


# --- the in-context posterior predictive ---------------------------------------------


def _ctx_transitions(cfg, seq, upto):
    """(row, col) of the in-context -> in-context transitions x_s -> x_{s+1}, s < upto."""
    lo, hi = cfg.n_det, cfg.n_det + cfg.n_ctx
    out = []
    for s in range(cfg.warmup - 1, upto):
        if lo <= seq[s] < hi and lo <= seq[s + 1] < hi:
            out.append((seq[s] - lo, seq[s + 1] - lo))
    return out


TINY = {"n_det": 2, "n_ctx": 3, "leak": 0.1, "alpha": 0.7, "n_test": 2}
ORDERS = [{"n_fixed": 0, "order": 1}, {"n_fixed": 1, "order": 2}]  # order 2: x_0 -> x_1 uniform


@pytest.mark.parametrize("orders", ORDERS, ids=["order1", "order2"])
def test_posterior_predictive_matches_importance_sampling(orders):
    cfg = MarkovConfig(seq_len=10, **TINY, **orders)
    lang = draw_language(cfg)
    x, _, _, _ = sample(cfg, lang, 400, np.random.default_rng(1))
    lo, hi = cfg.n_det, cfg.n_det + cfg.n_ctx
    starts_ctx = [s for s in x if lo <= s[0] < hi and lo <= s[1] < hi]  # a step not to count
    seq = max(starts_ctx, key=lambda s: len(_ctx_transitions(cfg, s, cfg.seq_len)))
    assert len(_ctx_transitions(cfg, seq, cfg.seq_len)) >= 6
    p = true_predictive(cfg, lang, seq[None, :-1])[0]  # [T, V]
    rng = np.random.default_rng(2)
    theta = rng.dirichlet(np.full(3, cfg.alpha), size=(200_000, 3))  # prior draws [M, K, K]
    checked = 0
    for t in range(cfg.seq_len):
        r = seq[t] - cfg.n_det
        if t + 1 < cfg.warmup:  # x_{t+1} is a uniform warm-up token
            np.testing.assert_array_equal(p[t], 1.0 / cfg.n_base)
            continue
        if not 0 <= r < cfg.n_ctx:
            continue
        trans = _ctx_transitions(cfg, seq, t)
        logw = sum(np.log(theta[:, a, b]) for a, b in trans) if trans else np.zeros(len(theta))
        w = np.exp(logw - logw.max())
        est = (w[:, None] * theta[:, r]).sum(0) / w.sum()  # E[theta_r | prefix]
        se = np.sqrt((w[:, None] ** 2 * (theta[:, r] - est) ** 2).sum(0)) / w.sum()
        assert se.max() < 0.005, "importance sampler too noisy for a meaningful check"
        got = p[t, lo:hi] / (1 - cfg.leak)
        assert np.all(np.abs(got - est) <= Z * se), f"t={t}: {got} vs IS {est} (se {se})"
        nonctx = np.r_[0:lo, hi : cfg.n_base]
        np.testing.assert_allclose(p[t, nonctx], cfg.leak / nonctx.size, rtol=1e-12)
        checked += 1
    assert checked >= 6


@pytest.mark.parametrize("orders", ORDERS, ids=["order1", "order2"])
def test_in_context_ic_is_the_marginal_likelihood(orders):
    """Sum of log predictives on ctx->ctx steps = log Dirichlet-multinomial evidence."""
    cfg = MarkovConfig(seq_len=30, **TINY, **orders)
    lang = draw_language(cfg)
    x, logp, _, _ = sample(cfg, lang, 50, np.random.default_rng(3))
    a = np.full(cfg.n_ctx, cfg.alpha)

    def log_beta(v):
        return gammaln(v).sum() - gammaln(v.sum())

    for seq, lp in zip(x, logp):
        trans = _ctx_transitions(cfg, seq, cfg.seq_len)
        n = np.zeros((cfg.n_ctx, cfg.n_ctx))
        for r, c in trans:
            n[r, c] += 1
        evidence = sum(log_beta(a + n[r]) - log_beta(a) for r in range(cfg.n_ctx))
        lo, hi = cfg.n_det, cfg.n_det + cfg.n_ctx
        mask = [
            t + 1 >= cfg.warmup and lo <= seq[t] < hi and lo <= seq[t + 1] < hi
            for t in range(cfg.seq_len)
        ]
        got = lp[np.array(mask)].sum()
        assert got == pytest.approx(evidence + len(trans) * math.log(1 - cfg.leak), abs=1e-9)


# --- IC, splits and ceilings ---------------------------------------------------------


def _split_ids(data):
    ic, cut = data.sample_info["test_ic"], data.info["ic_cut"]
    return {"simple": ic <= cut, "complex": ic > cut, "all": np.ones(len(ic), dtype=bool)}


@pytest.mark.parametrize("name", ["hybrid", "fixed1", "incontext"])
def test_ceiling_loss_is_the_mean_ic_of_the_split(name):
    data = generate(small(name))
    ic = data.sample_info["test_ic"]
    for split, mask in _split_ids(data).items():
        assert data.ceilings[split]["loss"] == pytest.approx(ic[mask].mean(), rel=1e-12)
        assert torch.equal(data.evals[split].inputs, data.evals["all"].inputs[mask])


@pytest.mark.parametrize("q", [0.3, 0.5, 0.8])
def test_split_sizes_follow_the_quantile(q):
    n = 500
    data = generate(small("fixed2", simple_quantile=q, n_test=n))
    ic = data.sample_info["test_ic"]
    assert list(data.evals) == ["simple", "complex", "all"]
    n_simple, n_complex = len(data.evals["simple"]), len(data.evals["complex"])
    assert n_simple + n_complex == len(data.evals["all"]) == n
    assert data.info["sizes"]["simple"] == n_simple
    # np.quantile interpolates at h = q (n - 1): at least floor(h) + 1 samples lie at or
    # below the cut, at most ceil(h) strictly below; without ties that is q n to within 1.
    h, cut = q * (n - 1), data.info["ic_cut"]
    assert n_simple >= math.floor(h) + 1 and int((ic < cut).sum()) <= math.ceil(h)
    ties = int((ic == ic[ic <= cut].max()).sum())
    assert abs(n_simple - q * n) <= ties
    assert ties <= 3, "fixed2 ICs should rarely tie; the size check above would be loose"
    mask = _split_ids(data)
    assert ic[mask["simple"]].max() < ic[mask["complex"]].min()
    assert data.ceilings["simple"]["loss"] < data.ceilings["complex"]["loss"]


def test_ties_at_the_cut_all_go_to_simple():
    data = generate(MarkovConfig.language("hybrid", simple_quantile=0.2))
    ic = data.sample_info["test_ic"]
    spike = ic.min()  # the purely deterministic samples
    assert (ic == spike).mean() > 0.2
    assert data.info["ic_cut"] == pytest.approx(spike)
    assert len(data.evals["simple"]) == int((ic == spike).sum())
    assert data.ceilings["simple"]["acc_expected"] == pytest.approx(0.98 + 0.02 / 12, abs=1e-12)
    assert data.ceilings["simple"]["acc"] == 1.0  # every spike token followed its successor


@pytest.mark.parametrize("name", list(LANGUAGES))
def test_named_languages_generate_with_their_layout(name):
    cfg = small(name)
    data = generate(cfg)
    over = LANGUAGES[name]
    assert all(getattr(cfg, k) == v for k, v in over.items())
    lay = data.info["vocab"]
    assert [len(lay[g]) for g in ("det", "ctx", "fixed")] == [cfg.n_det, cfg.n_ctx, cfg.n_fixed]
    assert lay["det"] + lay["ctx"] + lay["fixed"] == list(range(cfg.n_base))
    n_mode = cfg.n_modes if cfg.n_modes > 1 else 0
    assert lay["mode"] == list(range(cfg.n_base, cfg.n_base + n_mode))
    assert data.vocab_size == cfg.n_base + n_mode
    assert data.max_len == cfg.seq_len == data.train.inputs.shape[1]
    x = torch.cat([data.train.inputs, data.evals["all"].inputs])
    assert int(x.min()) >= 0 and int(x.max()) < data.vocab_size
    if n_mode:
        assert torch.all(x[:, 0] >= cfg.n_base) and torch.all(x[:, 1:] < cfg.n_base)
    assert torch.all(data.train.targets < cfg.n_base)  # a mode token is never a target
    used = set(torch.unique(x).tolist())
    assert used == set(range(data.vocab_size)), "every token id of the layout occurs"
    ceil = data.ceilings
    assert 0 < ceil["complex"]["acc"] <= ceil["simple"]["acc"] <= 1
    assert data.info["ctx_fraction"]["all"] == pytest.approx(
        np.isin(data.evals["all"].inputs.numpy(), lay["ctx"]).mean()
    )


def test_hybrid_complex_ceiling_well_below_simple():
    data = generate(MarkovConfig())  # the default hybrid at full size
    s, c = data.ceilings["simple"], data.ceilings["complex"]
    msg = f"simple acc {s['acc']:.3f} loss {s['loss']:.3f}; complex {c['acc']:.3f} {c['loss']:.3f}"
    assert s["acc"] > 0.95 and c["acc"] < 0.8 and s["acc"] - c["acc"] > 0.2, msg
    frac = data.info["ctx_fraction"]
    assert frac["complex"] > 0.4 > 0.05 > frac["simple"], frac  # complex = in-context part


# --- bad configs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"n_det": 1}, "n_det"),
        ({"n_det": -2}, "n_det"),
        ({"n_det": 0, "n_ctx": 1, "n_fixed": 0}, "n_det + n_ctx + n_fixed"),
        ({"p_det": 1.5}, "p_det"),
        ({"leak": -0.1}, "leak"),
        ({"n_det": 0, "n_ctx": 4, "leak": 0.1}, "leak"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"order": 0}, "order"),
        ({"n_fixed": 40, "order": 5}, "order"),
        ({"n_modes": 0}, "n_modes"),
        ({"seq_len": 1}, "seq_len"),
        ({"n_modes": 2, "seq_len": 2}, "seq_len"),
        ({"n_train": 0}, "n_train"),
        ({"n_test": 1}, "n_test"),
        ({"simple_quantile": 1.0}, "simple_quantile"),
        ({"seed": -1}, "seed"),
        ({"n_ctx": 2.5}, "n_ctx"),
        ({"n_det": True}, "n_det"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_configs_raise(overrides, field):
    with pytest.raises(LandscapeError, match=field.replace("+", r"\+")):
        MarkovConfig(**overrides)


def test_numpy_numbers_are_normalised_and_info_is_json():
    cfg = small(n_det=np.int64(6), p_det=np.float32(0.5), seed=np.int32(2))
    assert type(cfg.n_det) is int and type(cfg.p_det) is float and type(cfg.seed) is int
    assert json.loads(json.dumps(generate(cfg).info))["config"]["n_det"] == 6


def test_unknown_language_or_field_raises():
    with pytest.raises(LandscapeError, match="hybrid"):
        MarkovConfig.language("nope")
    with pytest.raises(LandscapeError, match="n_dett"):
        MarkovConfig.language("hybrid", n_dett=3)


def test_empty_complex_split_raises():
    cfg = MarkovConfig(n_det=4, n_ctx=0, p_det=1.0, n_test=8, seq_len=8)
    with pytest.raises(LandscapeError, match="complex split is empty"):
        generate(cfg)


def test_long_split_is_scored_beyond_the_training_length_only():
    from landscape.train.tasks.markov import MarkovConfig, generate

    base = generate(MarkovConfig(n_train=16, n_test=32, seq_len=12))
    data = generate(MarkovConfig(n_train=16, n_test=32, seq_len=12, long_len=24))
    long = data.evals["long"]
    assert long.inputs.shape == (32, 24) and data.max_len == 24
    assert (long.targets[:, :12] == -100).all() and (long.targets[:, 12:] >= 0).all()
    assert 0 < data.ceilings["long"]["acc"] <= 1
    for k in ("simple", "complex", "all"):  # the other splits do not change
        assert torch.equal(base.evals[k].inputs, data.evals[k].inputs)
    with pytest.raises(LandscapeError, match="long_len"):
        MarkovConfig(seq_len=12, long_len=12)


def test_language_of_names_the_structure_not_the_seed():
    from landscape.train.tasks.markov import LANGUAGES, MarkovConfig, language_of

    for name in LANGUAGES:
        assert language_of(MarkovConfig.language(name, seed=7, n_train=64)) == name
    assert language_of(MarkovConfig(n_det=5)) is None
    assert language_of(object()) is None
