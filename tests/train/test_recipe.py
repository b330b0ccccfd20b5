from pathlib import Path

import pytest

from landscape.errors import LandscapeError
from landscape.train.archs import ARCHS, LOOPED, SHIFT, SINGLE
from landscape.train.recipe import (
    LOOPS_MAX,
    RECIPE_DIR,
    SEED_MAX,
    Recipe,
    TrainConfig,
    check_device,
    find_recipe,
    load_recipe,
    parse_override,
    recipe_from_dict,
    recipe_from_json,
    shipped_recipes,
    with_arch,
)

MODELS = Path(__file__).parents[2] / "models"


@pytest.mark.parametrize("path", sorted(RECIPE_DIR.rglob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    r = load_recipe(path)
    assert isinstance(r, Recipe)
    assert recipe_from_json(r.to_json()) == r


def test_extends_and_presets():
    r = load_recipe(RECIPE_DIR / "looped_attn.toml")
    q = load_recipe(RECIPE_DIR / "looped_attn.toml", preset="quick")
    assert r.name == "looped_attn" and r.model.loops == 3 and r.arch == "looped"
    assert r.task.n_ctx == 4  # inherited from markov.toml
    assert q.train.epochs < r.train.epochs
    assert load_recipe(RECIPE_DIR / "shift.toml").arch == "shift"


def test_unknown_key_is_named():
    with pytest.raises(LandscapeError, match="unknown key 'lrr'"):
        recipe_from_dict({"train": {"lrr": 1e-3}})
    with pytest.raises(LandscapeError, match="unknown table or key 'trian'"):
        recipe_from_dict({"trian": {}})


@pytest.mark.parametrize("tables, message", [
    ({"train": {"lr": "fast"}}, "train.lr must be float"),
    ({"train": {"epochs": 1.5}}, "train.epochs must be int"),
    ({"model": {"mlp": 1}}, "model.mlp must be bool"),
    ({"train": {"lr": -1.0}}, "train.lr must be > 0"),
    ({"model": {"attention": "sparse"}}, "attention='sparse' is not one of"),
    ({"task": {"name": "sudoku"}}, "unknown task 'sudoku'"),
    ({"shift": {"max_fraction": 0}}, "max_fraction"),
])
def test_bad_values_are_rejected(tables, message):
    with pytest.raises(LandscapeError, match=message):
        recipe_from_dict(tables)


@pytest.mark.parametrize("override, message", [
    ("train.lr=nan", "train.lr must be a finite number"),
    ("train.lr=inf", "train.lr must be a finite number"),
    ("train.grad_clip=inf", "train.grad_clip must be a finite number"),
    ("train.weight_decay=1e400", "train.weight_decay must be a finite number"),
    ("shift.delta_1=inf", "shift.delta_1 must be a finite number"),
    ("task.p_det=nan", "task.p_det must be a finite number"),
    ("train.lr=100000000000000000000000000000000000000000000000000000000000000000000000000"
     "0000000000000000000000000000000000000000000000000000000000000000000000000000000000"
     "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
     "0000000000000000000000000000000000000000000000000000000000000000000000000000000000"
     "00000", "train.lr must be a finite number"),
    ("train.seed=99999999999999999999999", "train.seed=.* is out of range"),
    ("train.seed=-1", "train.seed must be in 0..9223372036854775807"),
    ("model.loops=99999999999999999999", "model.loops=.* is out of range"),
    ("model.loops=5000", "model.loops must be <= 1024"),
    ("shift.loops_after=5000", "shift.loops_after must be in 2..1024"),
    ("train.epochs=4000000000", "must be <= 2147483647"),
    ("train.batch_size=4000000000", "must be <= 2147483647"),
    ("train.threads=100000000000000", "train.threads must be <= 1024"),
    ("shift.at_step=4000000000", "shift.at_step must be in 0..2147483647"),
    ("train.device='banana'", "train.device 'banana': use cpu, cuda or cuda:N"),
    ("train.device='cuda:x'", "train.device 'cuda:x'"),
    ("train.device='mps'", "train.device 'mps'"),
])
def test_impossible_numbers_and_devices_are_refused(override, message):
    with pytest.raises(LandscapeError, match=message):
        load_recipe(overrides=[parse_override(override)])


def test_the_limits_themselves_are_accepted():
    r = load_recipe(overrides=[{"train": {"seed": SEED_MAX, "device": "cuda:3"},
                                "model": {"loops": LOOPS_MAX}}])
    assert r.train.seed == SEED_MAX and r.model.loops == LOOPS_MAX
    assert recipe_from_json(r.to_json()) == r  # a run trained on a GPU reads anywhere


def test_direct_construction_refuses_nan_too():
    with pytest.raises(LandscapeError, match="train.beta1 must be a finite number"):
        TrainConfig(beta1=float("nan"))


@pytest.mark.parametrize("text, available, message", [
    ("banana", False, "--device 'banana': use cpu, cuda or cuda:N"),
    ("cuda:x", False, "use cpu, cuda or cuda:N"),
    ("mps", False, "use cpu, cuda or cuda:N"),
    ("", False, "use cpu, cuda or cuda:N"),
    ("cuda:99", True, "--device cuda:99: (no CUDA device is available|there are)"),
])
def test_check_device(text, available, message):
    with pytest.raises(LandscapeError, match=message):
        check_device(text, available=available)


def test_check_device_accepts_cpu_and_cuda_names():
    assert check_device("cpu", available=True) == "cpu"
    assert check_device("cuda:1") == "cuda:1"


def test_int_is_accepted_for_float():
    assert recipe_from_dict({"train": {"lr": 1}}).train.lr == 1.0


def test_overrides():
    assert parse_override("train.lr=3e-4") == {"train": {"lr": 3e-4}}
    assert parse_override("model.attention=linear") == {"model": {"attention": "linear"}}
    assert parse_override('task.name="parity"') == {"task": {"name": "parity"}}
    r = load_recipe(RECIPE_DIR / "single_attn.toml", overrides=[parse_override("model.loops=2")])
    assert r.model.loops == 2
    with pytest.raises(LandscapeError, match="table.key=value"):
        parse_override("lr")


def test_bad_recipe_files(tmp_path):
    with pytest.raises(LandscapeError, match="does not exist"):
        load_recipe(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr=1")
    with pytest.raises(LandscapeError, match="not valid TOML"):
        load_recipe(bad)
    loop = tmp_path / "loop.toml"
    loop.write_text('extends = "loop.toml"\n')
    with pytest.raises(LandscapeError, match="cycle"):
        load_recipe(loop)
    with pytest.raises(LandscapeError, match="no preset 'fast'"):
        load_recipe(RECIPE_DIR / "single_attn.toml", preset="fast")


def test_named_languages():
    r = load_recipe(RECIPE_DIR / "controls" / "fixed1.toml")
    assert (r.task.n_det, r.task.n_ctx, r.task.n_fixed) == (4, 0, 8) and r.name == "control_fixed1"
    assert load_recipe(RECIPE_DIR / "markov.toml").task.n_ctx == 4
    over = recipe_from_dict({"task": {"language": "incontext", "n_ctx": 6}})
    assert over.task.n_ctx == 6 and over.task.n_det == 0  # explicit keys win
    with pytest.raises(LandscapeError, match="task.language='zipf'"):
        recipe_from_dict({"task": {"language": "zipf"}})


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("recipe", ["parity.toml", "looped_attn.toml", "single_attn.toml"])
def test_with_arch_makes_each_architecture_from_any_recipe(recipe, arch):
    base = load_recipe(RECIPE_DIR / recipe)
    r = with_arch(base, arch)
    assert r.arch == arch and r.name == base.name and r.task == base.task
    assert r.model.loops == (3 if arch == LOOPED else 1)
    assert r.shift.enabled == (arch == SHIFT)
    if arch == SHIFT:
        assert r.shift.loops_after == 3
    assert with_arch(base, arch, name="x").name == "x"


def test_with_arch_keeps_a_looped_recipes_loop_count_and_refuses_unknown_names():
    five = load_recipe(RECIPE_DIR / "single_attn.toml", overrides=[{"model": {"loops": 5}}])
    assert with_arch(five, SHIFT).shift.loops_after == 5
    assert with_arch(five, SINGLE).model.loops == 1
    with pytest.raises(LandscapeError, match="unknown architecture 'loopy'"):
        with_arch(five, "loopy")


@pytest.mark.parametrize("arch", ["untied", "linear_single", "linear_looped", *ARCHS])
def test_every_architecture_and_control_round_trips(arch):
    from landscape.train.archs import ALL
    from landscape.train.recipe import with_arch

    assert arch in ALL
    for base in ("models/looped_attn.toml", "models/length/parity.toml"):
        r = with_arch(load_recipe(base), arch)
        assert r.arch == arch, base
        assert with_arch(r, arch) == r  # applying it twice changes nothing more


def test_controls_match_looped_depth():
    from landscape.train.recipe import with_arch

    markov = with_arch(load_recipe("models/single_attn.toml"), "untied")
    assert (markov.model.layers, markov.model.loops) == (3, 1)  # Looped-Attn's 3 passes
    length = load_recipe("models/length/addition.toml")  # T(n) = n + 1, n <= 8
    assert with_arch(length, "untied").model.layers == 9
    single = with_arch(length, "single").model
    assert (single.loop_rule, single.loops, single.layers) == ("fixed", 1, 1)
    assert with_arch(length, "looped").model.loop_rule == "size"
    lin = with_arch(load_recipe("models/single_attn.toml"), "linear_looped").model
    assert (lin.attention, lin.loops) == ("linear", 3)


def test_models_folder_is_a_copy_of_the_shipped_recipes():
    shipped = {p.relative_to(RECIPE_DIR): p.read_bytes() for p in RECIPE_DIR.rglob("*.toml")}
    copied = {p.relative_to(MODELS): p.read_bytes() for p in MODELS.rglob("*.toml")}
    assert len(shipped) >= 14
    assert copied == shipped, ("models/ differs from landscape/train/recipes/ (the source): "
                               "make models")


def test_a_recipe_is_found_by_path_or_by_shipped_name(tmp_path, monkeypatch):
    assert find_recipe("looped_attn") == RECIPE_DIR / "looped_attn.toml"
    assert find_recipe("parity.toml") == RECIPE_DIR / "parity.toml"
    assert find_recipe("controls/fixed1") == RECIPE_DIR / "controls" / "fixed1.toml"
    assert load_recipe("controls/fixed1") == load_recipe(MODELS / "controls" / "fixed1.toml")
    assert set(shipped_recipes()) >= {"looped_attn", "single_attn", "shift", "parity"}
    monkeypatch.chdir(tmp_path)  # an existing file wins over a shipped name
    base = (RECIPE_DIR / "markov.toml").as_posix()
    (tmp_path / "looped_attn.toml").write_text(f'extends = "{base}"\n[model]\nloops = 5\n')
    assert load_recipe("looped_attn.toml").model.loops == 5
    assert load_recipe("looped_attn").model.loops == 3
    for bad in ("loopy", "../models/looped_attn", str(tmp_path / "nope.toml")):
        with pytest.raises(LandscapeError, match="does not exist and is not a shipped recipe"):
            load_recipe(bad)


@pytest.mark.parametrize("train, message", [
    ({"window_steps": -1, "window_at": [0]}, "train.window_steps must be in 0..2147483647"),
    ({"window_steps": 4, "window_at": [-3]}, "train.window_at: steps must be in 0"),
    ({"window_steps": 4, "window_at": [8, 0]}, "train.window_at must be increasing"),
    ({"window_steps": 4, "window_at": [8, 8]}, "train.window_at must be increasing"),
    ({"window_steps": 4, "window_at": [0, 2]}, "the window at 0 .4 steps. overlaps the one at 2"),
    ({"window_at": [0]}, "train.window_at needs train.window_steps >= 1"),
    ({"window_steps": 64}, "train.window_steps needs train.window_at"),
    ({"window_steps": 4, "window_at": 0}, "train.window_at must be a list"),
    ({"window_steps": 4, "window_at": [1.5]}, r"train.window_at\[0\] must be int"),
])
def test_bad_windows_are_refused(train, message):
    with pytest.raises(LandscapeError, match=message):
        recipe_from_dict({"train": train})


def test_windows_in_a_recipe_and_its_json():
    from landscape.train.recipe import WindowPlan, windows_of

    r = load_recipe(overrides=[parse_override("train.window_steps=64"),
                               parse_override("train.window_at=[0, 64, 200]")])
    assert r.train.window_at == (0, 64, 200) and recipe_from_json(r.to_json()) == r
    assert TrainConfig().window_steps == 0 and TrainConfig().window_at == ()
    # a stored recipe from before windows existed has neither key: both default to off
    old = {k: v for k, v in r.to_dict()["train"].items() if not k.startswith("window")}
    assert recipe_from_dict({"train": old}).train.window_steps == 0
    assert windows_of(r.train, 230) == [WindowPlan(0, 64, 64), WindowPlan(64, 64, 64),
                                        WindowPlan(200, 30, 64)]
    with pytest.raises(LandscapeError, match="window at step 200 starts after the run's last"):
        windows_of(r.train, 200)
