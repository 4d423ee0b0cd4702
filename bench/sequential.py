"""Whole-sequence training against RecBole's prefix training: SASRec and BERT4Rec.

    python bench/sequential.py [--parts 1 2 3 4] [--budget 1200] [--batches 20] [--data RAW_DIR]
                               [--attributes genre "genre year"]

Every model gets the same encoder (MAX_ITEM_LIST_LENGTH 50, hidden 64, inner
256, 2 layers, 2 heads; the dropouts of RecBole's defaults) and learning
rate; movierec's models keep their yaml's other settings (batch size in
windows, ft_ratio), RecBole's theirs (base.yaml's batch size, in prefixes).
Each measurement runs in its own process.

1. Embedded MovieLens-100K: seconds of one training epoch and the memory
   it takes (peak resident size during the epoch, and above the size before
   it), movierec's SASRec vs RecBoleSASRec, BERT4Rec vs RecBoleBERT4Rec.
   movierec's models read every window here (train_windows: all), so an
   epoch has RecBole's targets; the yaml's one window per user is cheaper.
2. Embedded MovieLens-100K: training with holdout Recall@10 after each epoch,
   early stopping (10 epochs without gain) within the same wall-clock budget
   (--budget seconds per model): the best Recall@10, and the seconds each
   needed to reach the best of RecBole's model (training + evaluation time).
   movierec's models as their yaml has them (one window per user and
   epoch), and SASRec also with every window (train_windows: all) and with
   gBCE (yaml/gsasrec.yaml's loss and its settings of it).
3. Competition scale (synthetic, 31,360 users, about 5.15M interactions;
   hidden 32, L 50): seconds per epoch (every window), timed on --batches
   batches and extrapolated to the epoch's batches (a full RecBole epoch
   takes hours on this CPU), and the peak memory; also SASRec with gBCE.
4. Item attributes (item_attributes), on --data (default the embedded
   MovieLens-100K): the quick blend's sequential members (gSASRec and
   BERT4Rec with their yaml's quick: block and the recipe's changes: early
   stopping on recall@10 last, up to 40 epochs), without attributes and with
   each --attributes set: seconds of one pass over the training windows (its
   own process, as part 1) and the early-stopped holdout Recall@10 of run.py's
   pipeline (validation only) with its interval, parts, the paired
   differences with the run without attributes (whole holdout, last part),
   and the run's seconds. Not part of the default run (--parts 4).

Goals: >= 10x less time per epoch, >= 5x less time to reach RecBole's best
Recall@10, best Recall@10 no lower than RecBole's (within 0.002), peak
memory no higher.
"""

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    BENCH_DATA,
    HOLDOUT_HEADER,
    competition_scale_raw,
    holdout_columns,
    measured,
    memory_mb,
    model_settings,
    table,
)

DATA_DIR = BENCH_DATA / "sequential"
ENCODER = [
    "MAX_ITEM_LIST_LENGTH=50",
    "hidden_size=64",
    "inner_size=256",
    "n_layers=2",
    "n_heads=2",
    "learning_rate=0.001",
]
SCALE_ENCODER = ["MAX_ITEM_LIST_LENGTH=50", "hidden_size=32", "inner_size=128", "n_layers=2", "n_heads=2"]
SASREC_DROPOUT = ["hidden_dropout_prob=0.5", "attn_dropout_prob=0.5"]  # RecBole's SASRec defaults
BERT4REC_DROPOUT = ["hidden_dropout_prob=0.2", "attn_dropout_prob=0.2", "mask_ratio=0.2"]  # RecBole's BERT4Rec
PAIRS = [  # (movierec label, model, overrides), (RecBole label, model, overrides)
    (("SASRec (movierec, CE)", "SASRec", SASREC_DROPOUT), ("RecBoleSASRec", "RecBoleSASRec", SASREC_DROPOUT)),
    (("BERT4Rec (movierec)", "BERT4Rec", BERT4REC_DROPOUT), ("RecBoleBERT4Rec", "RecBoleBERT4Rec", BERT4REC_DROPOUT)),
]
EVERY_WINDOW = ["train_windows=all"]  # an epoch with RecBole's targets: each interaction but a user's first
EXTRA = {  # part 2 only: movierec variants compared with RecBoleSASRec
    "SASRec (movierec, CE, every window)": ("SASRec", [*SASREC_DROPOUT, *EVERY_WINDOW]),
    "SASRec (movierec, gBCE)": ("SASRec", [*SASREC_DROPOUT, "loss_type=gBCE", "neg_samples=256", "gbce_t=0.75"]),
}
SCALE_EXTRA = ["SASRec (movierec, gBCE)"]  # part 3 also: 256 sampled negatives instead of CE's 6,807 items


def child(model_name, task, overrides, budget, batches):
    """In a fresh process: build the data, then measure; prints one JSON line."""
    import torch
    from recbole.utils import init_seed

    from recbole_ext.data.dataset import History, load_dataset, train_loader
    from recbole_ext.patches import registry
    from recbole_ext.quick_start.pipeline import prepare_data
    from recbole_ext.trainer.early_stopping import HoldoutScorer, holdout_trainer
    from recbole_ext.trainer.recbole_config import recbole_config

    scale = task == "scale"
    data = [f"data={competition_scale_raw()}"] if scale else []
    settings = model_settings(
        model_name,
        [*data, f"data_dir={DATA_DIR}", "state=WARNING", "show_progress=false", *overrides],
        quick=task == "quick-epoch",
    )
    prepared = prepare_data(settings)
    checkpoints = tempfile.mkdtemp(prefix="sequential-bench-")
    config = recbole_config(settings, prepared.data_path, prepared.valid_name, checkpoints)
    init_seed(config["seed"], config["reproducibility"])
    dataset = load_dataset(config)
    history = History.from_file(dataset, prepared.inter_path(prepared.valid_name))
    loader = train_loader(config, dataset, history)
    model = registry.get_model(settings.model)(config, dataset).to(config["device"])
    trainer = holdout_trainer(registry.get_trainer(config["MODEL_TYPE"], settings.model))(config, model)
    gc.collect()
    before, _ = memory_mb()
    Path("/proc/self/clear_refs").write_text("5")  # peak resident size := current
    result = {"batches": len(loader), "batch_size": config["train_batch_size"], "before_mb": before}

    if task in ("epoch", "quick-epoch", "scale"):
        limit = batches if scale else None
        started = time.perf_counter()
        trainer._train_epoch(_first(loader, limit), 0)
        seconds = time.perf_counter() - started
        timed = min(limit, len(loader)) if limit else len(loader)
        result.update(seconds=seconds * len(loader) / timed, timed_batches=timed)
    else:  # "budget": epochs with holdout evaluation until early stopping or the budget
        import pandas as pd

        scorer = HoldoutScorer(dataset, history, pd.read_csv(prepared.holdout_path), settings["predict_batch_users"])
        started, best, since_best, curve = time.perf_counter(), -1.0, 0, []
        for epoch in range(10_000):
            trainer._train_epoch(loader, epoch)
            recall = scorer(model)["recall@10"]
            curve.append((round(time.perf_counter() - started, 2), recall))
            best, since_best = (recall, 0) if recall > best else (best, since_best + 1)
            if since_best >= 10 or curve[-1][0] > budget:
                break
        result.update(curve=curve)
    result["peak_mb"] = memory_mb()[1]
    torch.cuda.empty_cache()
    print(json.dumps(result))


def _first(loader, limit):
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            return
        yield batch


def measure(model, task, overrides, budget=None, batches=None):
    limits = [f"--budget={budget}"] * (budget is not None) + [f"--batches={batches}"] * (batches is not None)
    args = [sys.executable, __file__, "--child", model, task, *limits, *overrides]
    _, _, stdout = measured(args)
    return json.loads(stdout.strip().splitlines()[-1])


def part1():
    print("\n1. one training epoch, embedded MovieLens-100K, L 50, hidden 64, 2 layers, 2 heads")
    rows, ratios = [], []
    for ours, recboles in PAIRS:
        results = {
            label: measure(model, "epoch", [*ENCODER, *extra, *EVERY_WINDOW * (label == ours[0])])
            for label, model, extra in (ours, recboles)
        }
        for label, r in results.items():
            rows.append(
                (
                    label,
                    r["batch_size"],
                    r["batches"],
                    f"{r['seconds']:.1f}",
                    f"{r['peak_mb']:.0f}",
                    f"{r['peak_mb'] - r['before_mb']:.0f}",
                )
            )
        a, b = results[ours[0]], results[recboles[0]]
        ratios.append(
            (
                f"{recboles[0]} / {ours[0]}",
                f"{b['seconds'] / a['seconds']:.1f}x",
                f"{a['peak_mb'] / b['peak_mb']:.2f}",
                f"{(a['peak_mb'] - a['before_mb']) / (b['peak_mb'] - b['before_mb']):.2f}",
            )
        )
    print(table(rows, ("model", "batch size", "batches", "epoch s", "peak MB", "epoch adds MB")))
    print(table(ratios, ("", "time per epoch (goal >= 10x)", "peak ours/RecBole (goal <= 1)", "added ours/RecBole")))


def part2(budget):
    print(f"\n2. early-stopped training, embedded MovieLens-100K, same encoder, budget {budget} s per model")
    runs = {}
    for ours, recboles in PAIRS:
        for label, model, extra in (recboles, ours):
            runs[label] = measure(model, "budget", [*ENCODER, *extra], budget=budget)
    for label, (model, extra) in EXTRA.items():
        runs[label] = measure(model, "budget", [*ENCODER, *extra], budget=budget)
    reference = {ours[0]: recboles[0] for ours, recboles in PAIRS}
    reference.update({label: "RecBoleSASRec" for label in EXTRA})
    rows, goals = [], []
    for label, r in runs.items():
        curve = r["curve"]
        best_time, best = max(curve, key=lambda point: (point[1], -point[0]))
        row = [label, len(curve), f"{best:.4f}", f"{best_time:.0f}", f"{curve[-1][0]:.0f}", "", ""]
        if label in reference:
            target_label = reference[label]
            target_time, target = max(runs[target_label]["curve"], key=lambda point: (point[1], -point[0]))
            reached = next((t for t, recall in curve if recall >= target), None)
            row[5] = f"{reached:.0f}" if reached is not None else "never"
            row[6] = f"{target_time / reached:.1f}x" if reached else "-"
            goals.append((label, target_label, f"{best - target:+.4f}", row[6]))
        rows.append(row)
    print(
        table(
            rows, ("model", "epochs", "best recall@10", "s to best", "s run", "s to RecBole's best", "speed-up to it")
        )
    )
    print(
        table(
            goals,
            (
                "movierec",
                "against",
                "best recall@10 difference (goal >= -0.002)",
                "time to RecBole's best (goal >= 5x)",
            ),
        )
    )
    for label, r in runs.items():
        print(f"  {label}: " + ", ".join(f"{t:.0f}s {recall:.4f}" for t, recall in r["curve"]))


def part3(batches):
    print(f"\n3. competition scale (synthetic), hidden 32, L 50: one epoch extrapolated from {batches} batches")
    results, reference = {}, {}
    for ours, recboles in PAIRS:
        for label, model, extra in (ours, recboles):
            every_window = EVERY_WINDOW if label == ours[0] else []
            results[label] = measure(model, "scale", [*SCALE_ENCODER, *extra, *every_window], batches=batches)
        reference[ours[0]] = recboles[0]
    for label in SCALE_EXTRA:
        model, extra = EXTRA[label]
        results[label] = measure(model, "scale", [*SCALE_ENCODER, *extra, *EVERY_WINDOW], batches=batches)
        reference[label] = "RecBoleSASRec"
    rows = [
        (
            label,
            r["batch_size"],
            r["batches"],
            r["timed_batches"],
            f"{r['seconds']:.0f}",
            f"{r['peak_mb']:.0f}",
            f"{r['peak_mb'] - r['before_mb']:.0f}",
        )
        for label, r in results.items()
    ]
    ratios = [
        (
            f"{target} / {label}",
            f"{results[target]['seconds'] / results[label]['seconds']:.1f}x",
            f"{results[label]['peak_mb'] / results[target]['peak_mb']:.2f}",
        )
        for label, target in reference.items()
    ]
    print(
        table(
            rows,
            ("model", "batch size", "batches / epoch", "timed", "epoch s (extrapolated)", "peak MB", "epoch adds MB"),
        )
    )
    print(table(ratios, ("", "time per epoch (goal >= 10x)", "peak ours/RecBole (goal <= 1)")))


ATTRIBUTE_MODELS = ("yaml/gsasrec.yaml", "yaml/bert4rec.yaml")  # the quick blend's sequential members
MEMBER_SETTINGS = ["valid_metric=recall@10 last", "epochs=40", "stopping_step=10"]  # as the quick recipe sets them


def part4(raw, attribute_sets):
    import pandas as pd

    from recbole_ext.evaluator.metrics import RECALL, paired_differences
    from recbole_ext.quick_start.pipeline import run
    from recbole_ext.utils.run_folder import read_holdout_users

    name = str(raw) if raw else "embedded MovieLens-100K"
    print(f"\n4. item attributes, {name}: the quick blend's sequential members ({', '.join(MEMBER_SETTINGS)})")
    data = [f"data={raw}"] if raw else []
    for model in ATTRIBUTE_MODELS:
        variants = {"none": []} | {f"[{', '.join(fields)}]": fields for fields in attribute_sets}
        rows, per_user = [], {}
        with tempfile.TemporaryDirectory(prefix="attributes-bench-", dir=BENCH_DATA) as out:
            for label, fields in variants.items():
                setting = f"item_attributes=[{', '.join(fields)}]"
                epoch = measure(model, "quick-epoch", [*data, setting])
                overrides = [*data, f"data_dir={DATA_DIR}", f"output_dir={out}/{len(rows)}", setting, *MEMBER_SETTINGS]
                started = time.perf_counter()
                settings = model_settings(model, [*overrides, "state=WARNING", "show_progress=false"], quick=True)
                summary = run(settings, validate_only=True)
                seconds = time.perf_counter() - started
                per_user[label] = read_holdout_users(summary["output_dir"])
                rows.append([label, f"{epoch['seconds']:.1f}", *holdout_columns(summary)[:4], summary["best_epoch"]])
                rows[-1] += [summary["epochs_run"], f"{seconds:.0f}"]
        for column in (RECALL, f"{RECALL} last"):  # the last part: what the members are in the blend for
            scores = pd.DataFrame({label: users[column] for label, users in per_user.items()}).dropna()
            differences = paired_differences(scores, "none")
            for row in rows:
                difference = differences.get(row[0])
                row.insert(
                    len(row) - 3, "" if difference is None else "{:+.4f} ({:+.4f} to {:+.4f})".format(*difference)
                )
        header = ("attributes", "epoch pass s", *HOLDOUT_HEADER[:4], "- none (95%)", "last - none (95%)", "best epoch")
        print(f"{model}:")
        print(table(rows, (*header, "epochs", "run s")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="*", type=int, default=[1, 2, 3])
    parser.add_argument("--data", type=Path, help="part 4: a raw folder (default: the embedded MovieLens-100K)")
    parser.add_argument(
        "--attributes",
        nargs="*",
        default=["genre", "genre year"],
        help='part 4: attribute sets, each one argument of space-separated fields (default: genre "genre year")',
    )
    parser.add_argument("--budget", type=float, default=1200, help="part 2: seconds per model (default 1200)")
    parser.add_argument("--batches", type=int, default=20, help="part 3: batches timed per model (default 20)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.child:
        return child(*args.child, overrides, args.budget, args.batches)
    import torch

    print(
        f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}"
    )
    for part in args.parts:
        {
            1: part1,
            2: lambda: part2(args.budget),
            3: lambda: part3(args.batches),
            4: lambda: part4(args.data, [fields.split() for fields in args.attributes]),
        }[part]()
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
