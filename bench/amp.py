"""Mixed precision on the CPU: amp off vs bf16 for the window-trained models, side by side.

    python bench/amp.py [--epochs 10] [--models SASRec yaml/gsasrec.yaml BERT4Rec] [--data RAW_FOLDER]

Each model trains with its yaml's quick settings for a fixed number of epochs (no early stop, so both
precisions do the same work) on the embedded MovieLens-100K unless --data names other raw files; the
holdout Recall@10 with its 95% interval and parts, and the training seconds per epoch. What bf16 should
show on a CPU: Recall@10 within the interval of fp32's. Its speed on a CPU says nothing of a GPU's (CPU
bf16 matmuls are emulated on most CPUs without AMX); fp16 and the GPU figures come from bench/gpu.py.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import BENCH_DATA, HOLDOUT_HEADER, holdout_columns, table
from bench.models import settings
from recbole_ext.pipeline import run

MODELS = ["SASRec", "yaml/gsasrec.yaml", "BERT4Rec"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--data", help="raw competition files (default: the embedded MovieLens-100K)")
    args = parser.parse_args()
    output = BENCH_DATA / "amp" / time.strftime("%Y%m%d-%H%M%S")
    data = [f"data={args.data}"] if args.data else []
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rows = []
    for model in args.models:
        for amp in ("off", "bf16"):
            overrides = [
                *data,
                f"amp={amp}",
                f"epochs={args.epochs}",
                f"stopping_step={args.epochs}",  # never stops early: both precisions train as long
                "device=cpu",
                "show_progress=false",
                "state=WARNING",
                f"output_dir={output / f'{Path(model).stem}-{amp}'}",
            ]
            summary = run(settings(model, overrides, quick=True), validate_only=True)
            per_epoch = summary["timings"]["valid_train"] / summary["epochs_run"]
            rows.append((model, amp, *holdout_columns(summary), summary["epochs_run"], f"{per_epoch:.2f}"))
            print(f"{model} amp {amp}: recall@10 {rows[-1][2]}", flush=True)
    print(f"\nholdout, {args.data or 'embedded MovieLens-100K'}, quick settings, {args.epochs} epochs, CPU")
    print(table(rows, ("model", "amp", *HOLDOUT_HEADER, "epochs", "s / epoch (train + holdout eval)")))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
