"""Shared by the figure scripts: find a reproduce folder's runs and draw one figure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from landscape.draw.figures import render, run_files
from landscape.errors import LandscapeError
from landscape.runs.run import Run


def draw(name: str, doc: str) -> None:
    """Parse ``[RUNS_DIR] [--out DIR] [--format pdf,png]`` and draw figure ``name``."""
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    ap.add_argument("folder", nargs="?", default="reproduce/quick",
                    help="a reproduce folder (its runs/*.h5) or a folder of run files")
    ap.add_argument("--out", default="figures/out", help="where the files go")
    ap.add_argument("--format", default="pdf,png", help="comma-separated formats")
    args = ap.parse_args()
    folder = Path(args.folder)
    paths = run_files(folder)
    try:
        if not paths and name != "concept":
            raise LandscapeError(f"no run files in {folder} or {folder}/runs; run "
                                 "`make reproduce` first")
        done = render([Run.open(p) for p in paths], [name], args.out,
                      tuple(args.format.split(",")))
    except LandscapeError as e:
        sys.exit(f"error: {e}")
    result = done[name]
    if isinstance(result, str):
        sys.exit(f"error: {result}")
    for p in result:
        print(p)
