"""S3Rec pretraining batches: movierec's tensor code against RecBole's per-position Python.

    python bench/s3rec.py [--batches 30] [--transfer [--pretrain-epochs 10]]

On the embedded MovieLens-100K, every user's sequence cut into windows of
MAX_ITEM_LIST_LENGTH=50 (RecBole's default) in batches of 256: the seconds to
build the pretraining batch (masked items, negatives, segments, attribute
targets) with movierec's ``S3Rec.pretraining_batch`` and with RecBole's
``S3Rec.reconstruct_pretrain_data``, on the same sequences, on the CPU.
Goal: at least 10x faster.

--transfer also measures what pretraining buys on the same data: the holdout
recall@10 of SASRec from scratch, after genre-only pretraining and after
genre + year pretraining, with the same CPU-sized encoder and finetuning
(SASRec from scratch also gets extra epochs to match the pretraining time).
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recbole.config import Config

from bench.common import BENCH_DATA, table
from recbole_ext.config.settings import load_settings
from recbole_ext.data.dataset import History, SequenceWindows, load_dataset
from recbole_ext.patches import registry
from recbole_ext.quick_start.pipeline import prepare_data, run
from recbole_ext.trainer.recbole_config import recbole_config

ENCODER = ["MAX_ITEM_LIST_LENGTH=50", "hidden_size=64", "n_layers=2", "n_heads=2", "state=WARNING"]


def batch_building(n_batches):
    settings = load_settings(
        "S3Rec", overrides=[*ENCODER, "item_attribute=[genre, year]", "train_batch_size=256", "train_windows=all"]
    )
    prepared = prepare_data(settings)
    config = recbole_config(
        settings,
        prepared.data_path,
        prepared.valid_name,
        BENCH_DATA / "checkpoints",
        load_col={**settings["load_col"], "item": ["item_id", "genre", "year"]},
    )
    dataset = load_dataset(config)
    history = History.from_file(dataset, prepared.inter_path(prepared.valid_name))
    batches = [b for _, b in zip(range(n_batches), SequenceWindows(history, config, "masked"))]
    ours = registry.get_model("S3Rec")(config, dataset)
    recbole_config_ = Config(
        model="RecBoleS3Rec",
        dataset=prepared.valid_name,
        config_dict={
            "data_path": str(prepared.data_path),
            "checkpoint_dir": str(BENCH_DATA / "checkpoints"),
            "item_attribute": "genre",
            "MAX_ITEM_LIST_LENGTH": 50,
            "train_stage": "pretrain",
            "state": "WARNING",
            "train_neg_sample_args": None,
        },
    )
    recboles = registry.get_model("RecBoleS3Rec")(recbole_config_, dataset)  # same dataset, same item ids

    def ours_with(attributes):
        for b in batches:
            seq, length = b["item_id_list"], b["item_length"]
            ours.pretraining_batch(seq, length)
            for attribute in attributes:  # the attribute targets, as RecBole's associated_features
                ours.attributes[attribute].item_values[seq]

    timings = {
        "movierec, genre": timed(lambda: ours_with(["genre"])),
        "movierec, genre + year": timed(lambda: ours_with(["genre", "year"])),
        "RecBole reconstruct_pretrain_data, genre": timed(
            lambda: [recboles.reconstruct_pretrain_data(b["item_id_list"], b["item_length"]) for b in batches]
        ),
    }
    sequences = sum(len(b["item_length"]) for b in batches)
    rows = [(name, f"{seconds:.3f}", f"{1000 * seconds / len(batches):.1f}") for name, seconds in timings.items()]
    print(
        f"{len(batches)} batches, {sequences} sequences of up to 50 items (MovieLens-100K), CPU, {torch.get_num_threads()} threads"
    )
    print(table(rows, ("pretraining batch", "seconds", "ms / batch")))
    speedup = timings["RecBole reconstruct_pretrain_data, genre"] / timings["movierec, genre"]
    print(f"\nspeed-up on the same attribute (genre): {speedup:.1f}x  (goal >= 10x)")


def timed(work, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def transfer(pretrain_epochs):
    """SASRec from scratch vs after single- and multi-attribute pretraining, CPU-sized, validation only."""
    output = BENCH_DATA / "s3rec-transfer" / time.strftime("%Y%m%d-%H%M%S")
    finetune = [
        "MAX_ITEM_LIST_LENGTH=20",
        "hidden_size=32",
        "inner_size=64",
        "epochs=8",
        "stopping_step=3",
        "state=WARNING",
        "show_progress=false",
    ]

    def holdout_run(name, model, *extra):
        settings = load_settings(model, overrides=[*finetune, *extra, f"output_dir={output / name}"])
        summary = run(settings, validate_only=True)
        pretraining = summary["pretraining"] or {"seconds": 0.0}
        return (
            summary["holdout"]["recall@10"],
            summary["epochs_run"],
            pretraining["seconds"],
            summary["timings"]["valid_train"],
        )

    results = {
        "S3Rec (genre) -> SASRec": holdout_run(
            "genre", "S3Rec", f"pretrain_epochs={pretrain_epochs}", "item_attribute={genre: 1.0}"
        ),
        "S3Rec (genre + year) -> SASRec": holdout_run(
            "genre-year", "S3Rec", f"pretrain_epochs={pretrain_epochs}", "item_attribute={genre: 1.0, year: 1.0}"
        ),
        "SASRec from scratch": holdout_run("scratch", "SASRec"),
    }
    # the same CPU time: scratch SASRec gets the epochs the pretraining cost
    _, epochs, _, seconds = results["SASRec from scratch"]
    budget = max(pre + train for _, _, pre, train in results.values())
    matched = max(epochs, round(budget / (seconds / epochs)))
    results[f"SASRec from scratch, up to {matched} epochs"] = holdout_run(
        "scratch-matched", "SASRec", f"epochs={matched}"
    )
    rows = [
        (name, f"{recall:.4f}", epochs, f"{pre:.0f}", f"{train:.0f}", f"{pre + train:.0f}")
        for name, (recall, epochs, pre, train) in results.items()
    ]
    print(
        f"\nholdout recall@10 on MovieLens-100K; SASRec L=20, hidden 32, early stopping (3); "
        f"pretraining {pretrain_epochs} epochs"
    )
    print(table(rows, ("model", "recall@10", "epochs run", "pretrain s", "finetune s", "total s")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--transfer", action="store_true", help="also compare SASRec with and without pretraining")
    parser.add_argument("--pretrain-epochs", type=int, default=10, help="S3Rec pretraining epochs for --transfer")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_building(args.batches)
    if args.transfer:
        transfer(args.pretrain_epochs)


if __name__ == "__main__":
    main()
