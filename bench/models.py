"""Holdout recall@10 of many models on the embedded MovieLens-100K, CPU-sized.

    python bench/models.py [--models EASE SASRec yaml/gsasrec.yaml ...] [--full]

Each model runs through the same pipeline as run.py (validation fit only,
unless --full), with its yaml's `quick:` block where it has one, so the
numbers are the CPU-sized variants: GPU-sized settings score higher on the
sequential models. Prints recall@10 with its 95% interval and its parts (last,
random), ndcg@10 and training seconds per model.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import BENCH_DATA, HOLDOUT_HEADER, holdout_columns, model_settings, table
from recbole_ext.config.keys import YAML_DIR, read_yaml
from recbole_ext.quick_start.pipeline import run

# RecBole baselines with small settings (GRU4RecF's on top of its yaml)
BASELINES = {
    "Pop": [],
    "ItemKNN": [],
    "BPR": ["epochs=30", "stopping_step=5"],
    "MultiDAE": ["epochs=30", "stopping_step=5"],
    "NGCF": ["epochs=30", "stopping_step=5"],
    "GRU4RecF": [
        "epochs=5",
        "MAX_ITEM_LIST_LENGTH=20",
        "selected_features=[genre]",
        "load_col={inter: [user_id, item_id, timestamp], item: [item_id, genre]}",
    ],
    "FM": ["epochs=10", "stopping_step=3"],
}


def yaml_models():
    """A model's name where its yaml is yaml/<model>.yaml, else the file (yaml/gsasrec.yaml is SASRec's)."""
    return [
        model if path.stem == model.lower() else str(path.relative_to(YAML_DIR.parent))
        for path in sorted(YAML_DIR.glob("*.yaml"))
        if path.name != "base.yaml"
        for model in [read_yaml(path)["model"]]
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", help="default: every yaml/ model plus a few RecBole baselines")
    parser.add_argument("--full", action="store_true", help="also refit and write submissions")
    args = parser.parse_args()
    models = args.models or list(dict.fromkeys(yaml_models() + list(BASELINES)))  # GRU4RecF has both
    output = BENCH_DATA / "models" / time.strftime("%Y%m%d-%H%M%S")
    rows = []
    for model in models:
        has_quick = bool(model_settings(model).values.get("quick"))
        overrides = [
            *BASELINES.get(model, []),
            "show_progress=false",
            "state=WARNING",
            f"output_dir={output / Path(model).stem}",
        ]
        started = time.perf_counter()
        try:
            summary = run(model_settings(model, overrides, has_quick), validate_only=not args.full)
        except Exception as error:  # a benchmark reports a failing model and goes on
            rows.append((model, "failed", "", "", "", "", "", f"{type(error).__name__}: {error}"[:60]))
            continue
        seconds = time.perf_counter() - started
        rows.append((model, *holdout_columns(summary), f"{seconds:.0f}", "quick" if has_quick else "baseline settings"))
        print(f"{model}: recall@10 {rows[-1][1]}  ({seconds:.0f} s)", flush=True)
    rows.sort(key=lambda r: r[1] if r[1] != "failed" else "", reverse=True)
    print("\nholdout on MovieLens-100K (embedded default), CPU")
    print(table(rows, ("model", *HOLDOUT_HEADER, "seconds", "settings")))


if __name__ == "__main__":
    main()
