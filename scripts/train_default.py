"""Train the bundled default model (retina/data/default.h5) from its recipe, retina/recipes/default.toml.

    python scripts/train_default.py --out build/default          # about 51 minutes on a 2-core machine
    retina recipe default -o build/default                     # the same from the command line

The recipe file holds every stream, stage, weight and seed; retina.train.recipe.run does the work (resumable:
rerun the same command after an interruption).  The model is written to OUT/model.h5 with the recipe's text,
the package version and the git commit in its provenance, and a report to OUT/report.json and report.md.
docs/history.md tells how the recipe came to be.
"""

from __future__ import annotations

import argparse
import json
import logging

from retina.train.recipe import run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="default", help="a recipe TOML file, or the name of a shipped one")
    ap.add_argument("--out", default="build/default", help="folder for the datasets, checkpoints, model and report")
    ap.add_argument("--max-stages", type=int, default=None, help="stop after this many stages")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")   # the training loop logs each epoch
    _, report = run(args.recipe, args.out, max_stages=args.max_stages, progress=True)
    print(json.dumps({k: v for k, v in report.items() if k != "epochs"}, indent=1, default=float))


if __name__ == "__main__":
    main()
