"""Mixed precision on the CPU: amp off vs bf16 for the window-trained models, side by side with fp32's noise.

    python bench/amp.py [--epochs 10] [--models SASRec yaml/gsasrec.yaml BERT4Rec] [--data RAW_FOLDER]

Each model trains with its yaml's quick settings for a fixed number of epochs (no early stop, so every run
does the same work) on the embedded MovieLens-100K unless --data names other raw files, three times: fp32
and bf16 with the yaml's seed, and fp32 with another seed. Printed: the holdout Recall@10 with its 95%
interval and parts, the training seconds per epoch, and each run's paired difference from fp32 (the same
users, resampled alike): bf16's difference should be within what changing the seed does to fp32. Speed on
a CPU says little of a GPU's (this depends on the CPU's bfloat16 instructions: AMX, AVX512-BF16, or none);
fp16 and the GPU figures come from bench/gpu.py.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import BENCH_DATA, HOLDOUT_HEADER, holdout_columns, table
from bench.models import settings
from recbole_ext.evaluator.metrics import paired_differences
from recbole_ext.quick_start.pipeline import run
from recbole_ext.utils.run_folder import read_holdout_users

MODELS = ["SASRec", "yaml/gsasrec.yaml", "BERT4Rec"]
OTHER_SEED = 2021  # fp32's noise: the same run with another seed (the yaml's is base.yaml's 2020)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--data", help="raw competition files (default: the embedded MovieLens-100K)")
    args = parser.parse_args()
    output = BENCH_DATA / "amp" / time.strftime("%Y%m%d-%H%M%S")
    data = [f"data={args.data}"] if args.data else []
    flags = next((line.split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    bf16 = ", ".join(f for f in ("amx_bf16", "avx512_bf16") if f in flags) or "none"
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; bfloat16 instructions: {bf16}")
    rows = []
    for model in args.models:
        runs = {}
        for label, amp, seed in (
            ("fp32", "off", None),
            ("bf16", "bf16", None),
            (f"fp32-seed{OTHER_SEED}", "off", OTHER_SEED),
        ):
            overrides = [
                *data,
                f"amp={amp}",
                *([f"seed={seed}"] if seed else []),
                f"epochs={args.epochs}",
                f"stopping_step={args.epochs}",  # never stops early: every run trains as long
                "device=cpu",
                "show_progress=false",
                "state=WARNING",
                f"output_dir={output / f'{Path(model).stem}-{label}'}",
            ]
            summary = run(settings(model, overrides, quick=True), validate_only=True)
            per_epoch = summary["timings"]["valid_train"] / summary["epochs_run"]
            runs[label] = (summary, per_epoch)
            print(f"{model} {label}: recall@10 {summary['holdout']['recall@10']:.4f}", flush=True)
        users = pd.DataFrame(
            {label: read_holdout_users(s["output_dir"])["recall@10"] for label, (s, _) in runs.items()}
        )
        differences = paired_differences(users, "fp32")
        for label, (summary, per_epoch) in runs.items():
            difference = "" if label == "fp32" else "{:+.4f} ({:+.4f} to {:+.4f})".format(*differences[label])
            rows.append(
                (model, label, *holdout_columns(summary), difference, summary["epochs_run"], f"{per_epoch:.2f}")
            )
    print(f"\nholdout, {args.data or 'embedded MovieLens-100K'}, quick settings, {args.epochs} epochs, CPU")
    header = ("model", "run", *HOLDOUT_HEADER, "- fp32, paired (95%)", "epochs", "s / epoch (train + holdout eval)")
    print(table(rows, header))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
