"""Bundle the default model: the seed of the generic recipe with the lowest validation loss.

    retina emergence build/generic_s*/model.h5 -o results/emergence
    python scripts/bundle_default.py results/emergence/emergence.json

The choice reads only the validation loss the recipe recorded for each seed's chosen epoch
(``summary.best_by_validation`` of ``retina emergence``), never a phenomenon.  The model's arrays and content
hash are unchanged; its metadata gains ``description`` (what the model is, shown by ``retina info`` and
``retina explain``), ``fit`` (its recipe's held-out test correlations) and ``bundled_from`` (the emergence report
it was chosen in).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from retina.io import BUNDLED_MODELS, bundled_path, load_model, save_model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("emergence", help="emergence.json written by `retina emergence`")
    ap.add_argument("--name", default="default", choices=tuple(BUNDLED_MODELS), help="bundled name to write")
    args = ap.parse_args(argv)
    report = json.loads(Path(args.emergence).read_text())
    summary = report["summary"]
    best = summary.get("best_by_validation")
    if not best:
        raise SystemExit(f"{args.emergence} names no model with a recorded validation loss")
    model = load_model(best)
    before = model.content_hash()
    meta = model.metadata
    meta["description"] = (f"{BUNDLED_MODELS[args.name]}; recipe {meta.get('recipe_name')}, seed {meta.get('seed')} "
                           f"of {summary['n_models']}, commit {meta.get('git_commit')}")
    meta["bundled_from"] = f"{best}: lowest validation loss of {summary['n_models']} seeds ({args.emergence})"
    fit = [m["fit"] for m in report["models"] if m["model"]["path"] == best][0]
    meta["fit"] = json.dumps({k: round(v, 4) for k, v in fit.items() if k not in ("validation", "validation_loss")})
    out = Path(str(bundled_path(args.name)))
    save_model(model, out)
    assert load_model(str(out)).content_hash() == before
    print(f"{best} -> {out} ({meta['description']})")


if __name__ == "__main__":
    main()
