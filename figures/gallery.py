"""Regenerate the README gallery: small PNGs of every figure of a reproduce folder.

Usage: python figures/gallery.py [reproduce/quick] [--out docs/gallery]
Each PNG must stay under 300 KB (they are committed) and pass the figure checks of
landscape.draw.checks (no overlapping or cut-off text, labelled axes, no empty panel,
fonts of at least 7 pt, a caption); the script fails otherwise.
The captions the figures carry are written to OUT/CAPTIONS.md, for the README's table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from landscape.draw.checks import problems
from landscape.draw.figures import caption_of, render, run_files
from landscape.runs.run import Run

LIMIT = 300_000

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("folder", nargs="?", default="reproduce/quick")
ap.add_argument("--out", default="docs/gallery")
ap.add_argument("--dpi", type=int, default=110)
args = ap.parse_args()
paths = run_files(args.folder)  # the same files as the figure scripts find
if not paths:
    sys.exit(f"error: no run files in {args.folder} or {args.folder}/runs; run `make "
             "reproduce` first")
broken = {}  # landscape.draw.checks (the test suite's figure checks) on the real figures


def inspect(stem, fig):
    found = problems(fig)
    if found:
        broken[stem] = found


done = render([Run.open(p) for p in paths], ["all"], args.out, ("png",), dpi=args.dpi,
              inspect=inspect)
too_big, captions = [], ["# Gallery captions", "",
                         f"Written by figures/gallery.py from {args.folder}.", ""]
for name, result in done.items():
    if isinstance(result, str):
        print(f"{name}: {result}")
        continue
    for p in result:
        captions.append(f"- `{p.name}`: {caption_of(p)}")
        size = p.stat().st_size
        print(f"{p} {size / 1000:.0f} KB")
        if size > LIMIT:
            too_big.append(p)
(Path(args.out) / "CAPTIONS.md").write_text("\n".join(captions) + "\n")
for stem, found in broken.items():
    print(f"{stem}: {found}")
if too_big:
    sys.exit(f"error: over {LIMIT // 1000} KB: {', '.join(map(str, too_big))}; lower --dpi")
if broken:
    sys.exit(f"error: {len(broken)} figure(s) fail the figure checks: {', '.join(broken)}")
