"""``pip install .`` (not editable) works away from the repository: recipes, CLI, API.

The package is built and installed into a fresh virtual environment that cannot see this
checkout. Its dependencies (torch, numpy, ...) are taken from the environment running the
tests through a path file, which is only a shortcut around downloading them again: the
package itself, and the recipes shipped in it, come from the installed wheel (asserted).
``make check-install`` does the same with every dependency installed from the index.
"""

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from helpers import SMALL

ROOT = Path(__file__).parents[1]


def _run(cmd, cwd, env=None):
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                         env=env)
    assert out.returncode == 0, f"{cmd}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.mark.slow
def test_installed_package_trains_a_shipped_recipe_by_name_from_an_empty_folder(tmp_path):
    env_dir, work = tmp_path / "venv", tmp_path / "empty"
    work.mkdir()
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     work).strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # the wheel `pip install .` would build (with this environment's setuptools, offline)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--no-index", "--wheel-dir", tmp_path / "dist", ROOT], work)
    wheel = next((tmp_path / "dist").glob("looped_landscape-*.whl"))
    _run([py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel], work)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"

    where = _run([py, "-c", "import landscape, landscape.train.recipe as c; "
                  "print(landscape.__file__); print(c.RECIPE_DIR)"], work, env).split()
    assert all(Path(w).is_relative_to(site) for w in where), where  # not this checkout
    _run([env_dir / "bin" / "landscape", "train", "looped_attn", "--preset", "quick",
          "--out", "x.h5", *SMALL, "--set", "train.epochs=1", "-q"], work, env)
    check = ("import landscape; from landscape.reproduce import PRESETS; "
             "run = landscape.Run.open('x.h5'); print(run.recipe.name, run.status); "
             "print(sum(len([j.load() for j in jobs]) for jobs in PRESETS.values()))")
    name_status, jobs = _run([py, "-c", check], work, env).strip().splitlines()
    assert name_status == "looped_attn complete"
    assert int(jobs) > 0  # every reproduce job found its recipe in the installed package
