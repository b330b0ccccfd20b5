"""The README's walkthroughs run as written: the own-model and HuggingFace examples print
what README.md shows (the in-memory example runs in tests/probe/test_in_memory.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"


def _readme_console(command: str) -> list[str]:
    """The lines README.md shows after ``$ COMMAND`` (up to the next ``$`` or fence)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(f"$ {command}") + 1
    out = []
    for line in lines[start:]:
        if line.startswith("$ ") or line.startswith("```"):
            break
        out.append(line)
    return out


def _run(args: list[str], cwd: Path, stderr: bool = False) -> list[str]:
    """The lines a command prints (its report on stderr too where ``stderr``)."""
    env = {**os.environ, "PYTHONPATH": f"{EXAMPLES}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines() + (done.stderr.splitlines() if stderr else [])


@pytest.mark.slow
def test_the_huggingface_example_prints_what_the_readme_shows(tmp_path):
    pytest.importorskip("transformers")
    got = _run([sys.executable, str(EXAMPLES / "hf_gpt2.py")], tmp_path)
    assert got == _readme_console("python docs/examples/hf_gpt2.py")


@pytest.mark.slow
def test_the_own_model_example_records_and_probes_as_the_readme_shows(tmp_path):
    got = _run([sys.executable, str(EXAMPLES / "own_model.py")], tmp_path)
    assert got == _readme_console("python docs/examples/own_model.py")
    cli = [sys.executable, "-m", "landscape", "probe", "runs/own_model.h5", "--trust-code",
           "--steps", "spaced:3", "--k", "5", "--k-bottom", "2", "--slq-runs", "4",
           "--slq-steps", "40", "--trace-hvps", "20", "--grid", "11"]
    shown = [_part(x) for x in _readme_console(
        "PYTHONPATH=docs/examples landscape probe runs/own_model.h5 --trust-code --steps "
        "spaced:3 \\") if x.strip() != "..."][1:]  # after the continued command line
    probed = [_part(x) for x in _run(cli, tmp_path, stderr=True)]
    for line in shown:  # each part the README lists, with the HVPs of the fixed budgets
        assert line in probed, (line, probed)


def _part(line: str) -> str:
    """A probe report line without its seconds, and without Lanczos's HVP count (its steps
    to convergence vary with the thread count's rounding); fixed budgets keep theirs."""
    line = re.sub(r"(:| in) [\d.]+ s", r"\1 _ s", line)
    return re.sub(r"(top-\d+/bottom-\d+|sharpness): _ s, \d+ HVPs", r"\1: _ s", line)
