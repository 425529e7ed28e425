"""The end-to-end null check on real runs: one recipe's seeds split into two "recipes" (seeds
1..k against k+1..2k of a finished ``mlm-adapt compare`` folder), compared by the
Multi-Bootstrap and, seed against seed, by single runs' paired row bootstrap. Equally good
by construction: a calibrated verdict calls them different rarely.

Usage:  python benchmarks/same_recipe_check.py --folder DIR --recipe tapt [--out FILE]
        (after ``mlm-adapt compare ... --recipes tapt --seeds 2k --output DIR``)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mlm_adapt.evaluation.multibootstrap import SeedTables, accuracy, multibootstrap  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--recipe", default="tapt")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/same-recipe-check.json"))
    args = parser.parse_args()
    found = sorted(args.folder.glob(f"scores/{args.recipe}/seed-*.npz"), key=lambda p: int(p.stem.split("-")[1]))
    tables = {int(p.stem.split("-")[1]): np.load(p)["accuracy"] for p in found}
    seeds = sorted(tables)
    half = len(seeds) // 2
    first, second = seeds[:half], seeds[half:2 * half]

    def side(names):
        return SeedTables(tuple(range(len(names))), np.stack([tables[s] for s in names]))

    multi = multibootstrap(side(first), side(second), accuracy)
    single = [multibootstrap(side([a]), side([b]), accuracy) for a, b in itertools.product(first, second)]
    per_seed = {s: float(tables[s][:, 0].sum() / tables[s][:, 1].sum()) for s in seeds}
    report = {"folder": str(args.folder), "recipe": args.recipe, "first": first, "second": second,
              "accuracy_per_seed": per_seed, "multibootstrap": multi,
              "single_runs": [{"first": a, "second": b, "difference": r["difference"], "interval": r["interval"],
                               "significant": r["holds"]} for (a, b), r in zip(itertools.product(first, second), single)]}
    report["single_runs_significant"] = sum(r["holds"] for r in single)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("accuracy_per_seed", "single_runs_significant")}
                     | {"multibootstrap": {k: multi[k] for k in ("difference", "interval", "holds")}}))


if __name__ == "__main__":
    main()
