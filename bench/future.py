"""The future-film filter (filter.future_items): holdout Recall@10 of each N beside the run without it.

    python bench/future.py [--data RAW_DIR] [--scale] [--models EASE SASRec] [--years 0 2]

Per data set (the embedded MovieLens-100K, or --data RAW_DIR: the
competition's folder; --scale adds the synthetic competition-scale data with
EASE only, a sequential model takes hours there on a CPU) and model (EASE with
yaml/ease.yaml, SASRec with its quick: block), one validation run of run.py's
pipeline without the filter and one per N. Printed per run: holdout Recall@10
with its 95% interval, its last and random parts, the paired difference with
the run without the filter (the same users resampled for both), the Recall@10
of the users whose training ends before the data's last year (those the filter
touches most), how many films the filter puts last per holdout user, and the
run's seconds.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from atomic_data import Prepared
from bench.common import BENCH_DATA, HOLDOUT_HEADER, competition_scale_raw, holdout_columns, table
from recbole_ext.config.settings import load_settings
from recbole_ext.evaluator.metrics import RECALL, paired_differences
from recbole_ext.utils.run_folder import read_holdout_users

DATA_DIR = BENCH_DATA / "future"
QUICK = {"EASE": False, "SASRec": True}  # SASRec: its yaml's quick: block, the CPU size


def runs(raw, model, years, out):
    """{label: (summary, per-user frame, seconds)} of the runs without the filter and with each N."""
    from recbole_ext.quick_start.pipeline import run

    result = {}
    for n in [None, *years]:
        label = "off" if n is None else f"N = {n}"
        overrides = [
            *([f"data={raw}"] if raw else []),
            f"data_dir={DATA_DIR}",
            f"output_dir={out}/{model}-{label.replace(' = ', '')}",
            f"filter.future_items={'~' if n is None else n}",
            "state=WARNING",
            "show_progress=false",
        ]
        started = time.perf_counter()
        summary = run(load_settings(model, overrides=overrides, quick=QUICK[model]), validate_only=True)
        result[label] = (summary, read_holdout_users(summary["output_dir"]), time.perf_counter() - started)
    return result


def touched(summary, years):
    """(holdout users whose training ends before the data's last year, films put last per holdout user for
    each N): from the validation dataset and its history."""
    import torch

    from recbole_ext.data.dataset import History, load_dataset
    from recbole_ext.data.future import FutureItems
    from recbole_ext.trainer.recbole_config import recbole_config

    prepared = Prepared.load(summary["data"]["data_path"])
    settings = load_settings("EASE", overrides=["state=ERROR"])  # any model: the dataset's ids are the same
    with tempfile.TemporaryDirectory() as scratch:
        dataset = load_dataset(recbole_config(settings, prepared.data_path, prepared.valid_name, scratch))
    history = History.from_file(dataset, prepared.inter_path(prepared.valid_name))
    holdout = pd.read_csv(prepared.holdout_path)
    users = torch.from_numpy(dataset.token2id(dataset.uid_field, holdout["user"].unique().astype(str)))
    last = history.times[history.indptr[users + 1] - 1].numpy().astype("datetime64[s]").astype("datetime64[Y]")
    early = set(holdout["user"].unique()[last < last.max()])
    per_user = {n: float(FutureItems(dataset, n).mask(history, users).sum(1).float().mean()) for n in years}
    return early, per_user


def report(name, model, result, years):
    reference = result["off"][1]
    early, per_user = touched(result["off"][0], years)
    scores = pd.DataFrame({label: users[RECALL] for label, (_, users, _) in result.items()})
    differences = paired_differences(scores, "off")
    rows = []
    for label, (summary, users, seconds) in result.items():
        difference = differences.get(label)
        n = None if label == "off" else int(label.split()[-1])
        rows.append(
            (
                label,
                *holdout_columns(summary)[:4],
                "" if difference is None else f"{difference[0]:+.4f} ({difference[1]:+.4f} to {difference[2]:+.4f})",
                f"{users.loc[users.index.isin(early), RECALL].mean():.4f}",
                "0" if n is None else f"{per_user[n]:.0f}",
                f"{seconds:.0f}",
            )
        )
    print(f"\n{name}, {model}: {len(reference)} holdout users, {len(early)} of them end before the data's last year")
    header = ("filter", *HOLDOUT_HEADER[:4], "- off (95% interval)", "users ending early")
    print(table(rows, (*header, "films put last / user", "seconds")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="a raw folder (default: the embedded MovieLens-100K)")
    parser.add_argument("--scale", action="store_true", help="also EASE on the synthetic competition-scale data")
    parser.add_argument("--models", nargs="*", default=list(QUICK), choices=list(QUICK))
    parser.add_argument("--years", nargs="*", type=int, default=[0, 2], help="the values of N (default 0 2)")
    args = parser.parse_args()
    datasets = [(str(args.data) if args.data else "embedded MovieLens-100K", args.data, args.models)]
    if args.scale:
        datasets.append(("synthetic competition scale", competition_scale_raw(), ["EASE"]))
    with tempfile.TemporaryDirectory(prefix="future-bench-", dir=BENCH_DATA) as out:
        for i, (name, raw, models) in enumerate(datasets):
            for model in models:
                report(name, model, runs(raw, model, args.years, Path(out) / str(i)), args.years)


if __name__ == "__main__":
    main()
