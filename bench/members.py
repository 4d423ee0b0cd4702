"""The blend's members on more than one data set: do they learn, and does the blend gain from them?

    python bench/members.py [--parts 1 2] [--sample-users 300] [--recbole-epochs 10] [--batches 20]

1. For the embedded MovieLens-100K and a --sample-users user sample of it (atomic_data.sample, seed 0):
   `python -m recbole_ext.blend yaml/blends/leaderboard.yaml --quick` trains every member (validation fit
   on the holdout, refit, submission) and blends them; then popularity (Pop) and, on the embedded data,
   RecBoleSASRec (prefix training) at the settings of the recipe's SASRec member (L, hidden, inner,
   layers, heads, dropouts, learning rate, valid_metric; at most --recbole-epochs epochs: its epoch is
   about 100 s on 2 cores). Per model: holdout Recall@10 with its 95% interval, the last and random
   parts, the ratio to popularity's Recall@10, the run's seconds; then the blend: its weights, fitted and
   cross-fitted Recall@10, and the cross-fitted blend minus EASE with the paired 95% interval.
2. Competition scale (synthetic, 31,360 users): seconds per training target of movierec's SASRec (CE,
   gBCE) and BERT4Rec at their quick encoders, timed on --batches batches of the epoch as the yaml
   trains it, against the same encoder with the epoch of the last release (one random window per user,
   ties in file order).

Goals (issue 18), printed beside the figures: every learned member at least 2x popularity's Recall@10;
the best sequential member's last part at least RecBoleSASRec's and at least EASE's; RecVAE at least
MultiVAE; the blend puts weight on a sequential member, its cross-fitted Recall@10 at least EASE's
+ 0.004 with the paired interval above 0 (embedded data); the time per target within 1.5x.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    BENCH_DATA,
    HOLDOUT_HEADER,
    ROOT,
    competition_scale_raw,
    embedded_sample_raw,
    holdout_columns,
    measured,
    table,
)
from recbole_ext.config.settings import load_settings

RECIPE = ROOT / "yaml" / "blends" / "leaderboard.yaml"
OUT = BENCH_DATA / "members"
SEQUENTIAL = ("SASRec", "BERT4Rec")  # movierec's whole-sequence models
ENCODER_KEYS = (
    "MAX_ITEM_LIST_LENGTH",
    "hidden_size",
    "inner_size",
    "n_layers",
    "n_heads",
    "hidden_dropout_prob",
    "attn_dropout_prob",
    "learning_rate",
    "valid_metric",
)
QUIET = ["state=WARNING", "show_progress=false", "device=cpu"]
SCALE_MODELS = [  # part 2: (label, model, settings over its yaml's quick block)
    ("SASRec, CE", "SASRec", []),
    ("SASRec, gBCE", "SASRec", ["loss_type=gBCE", "neg_samples=256", "gbce_t=0.75"]),
    ("BERT4Rec", "BERT4Rec", []),
]


def data_sets(sample_users):
    """(label, raw folder or None for the embedded data) of part 1."""
    return [
        ("embedded MovieLens-100K (943 users)", None),
        (f"its {sample_users}-user sample", embedded_sample_raw(sample_users)),
    ]


def run_model(name, overrides, output):
    from recbole_ext.quick_start.pipeline import run

    shutil.rmtree(output, ignore_errors=True)
    started = time.perf_counter()
    summary = run(load_settings(name, overrides=[*QUIET, f"output_dir={output}", *overrides]), validate_only=True)
    return summary, time.perf_counter() - started


def part1(sample_users, recbole_epochs):
    from recbole_ext.blend.blend import blend
    from recbole_ext.blend.recipe import member_settings, read_recipe

    for label, raw in data_sets(sample_users):
        folder = OUT / ("embedded" if raw is None else raw.name)
        data = [f"data={raw}"] if raw else []
        shutil.rmtree(folder, ignore_errors=True)
        print(f"\n1. {label}: the quick recipe's members, popularity, the blend", flush=True)
        summary = blend(
            RECIPE, data=raw, output=folder / "blend", runs_dir=folder / "runs", quick=True, overrides=QUIET
        )
        rows = {}  # name: (summary, seconds, model)
        for member in summary["blend"]["members"]:
            run = member["runs"][0]
            member_summary = json.loads((Path(run["path"]) / "summary.json").read_text())
            rows[member["name"]] = (member_summary, run["seconds"], member_summary["model"])
        rows["popularity (Pop)"] = (*run_model("Pop", data, folder / "pop"), "Pop")
        recipe = read_recipe(RECIPE, quick=True)
        sasrec = next((s for s in recipe.members if member_settings(recipe, s).model == "SASRec"), None)
        if raw is None and sasrec is not None:
            values = member_settings(recipe, sasrec).values
            encoder = [f"{key}={values[key]}" for key in ENCODER_KEYS]
            print(f"RecBoleSASRec at {' '.join(encoder)} ...", flush=True)
            extra = [f"epochs={recbole_epochs}", "stopping_step=3", "train_batch_size=2048"]
            rows["RecBoleSASRec"] = (*run_model("RecBoleSASRec", [*encoder, *extra], folder / "recbolesasrec"), "")
        report(rows, summary)


def report(rows, summary):
    from recbole_ext.blend import ensemble

    pop = rows["popularity (Pop)"][0]["holdout"]["recall@10"]
    lines = []
    for name, (member, seconds, _) in rows.items():
        ratio = member["holdout"]["recall@10"] / pop
        lines.append((name, *holdout_columns(member)[:4], f"{ratio:.2f}x", f"{seconds:.0f}"))
    header = ("model", *HOLDOUT_HEADER[:4], "vs popularity (goal >= 2x)", "seconds")
    print(table(lines, header))
    weights = ensemble.as_text(summary)
    versus = summary["vs_best_member"]
    print(f"blend ({summary['method']}): weights {weights}")
    print(
        f"  recall@10 fitted {summary['holdout_fitted']['recall@10']:.4f}, cross-fitted "
        f"{summary['holdout']['recall@10']:.4f}; cross-fitted minus {versus['member']}: {versus['difference']:+.4f} "
        f"(paired 95% interval {versus['interval'][0]:+.4f} to {versus['interval'][1]:+.4f}; goal >= +0.004, above 0)"
    )
    parts = {name: member["holdout_detail"]["parts"] for name, (member, _, _) in rows.items()}
    sequential = [name for name, (_, _, model) in rows.items() if model in SEQUENTIAL]
    if sequential:
        best = max(sequential, key=lambda name: parts[name]["last"]["recall@10"])
        against = [name for name in ("EASE", "RecBoleSASRec") if name in parts]
        print(
            f"  best sequential member's last part: {best} {parts[best]['last']['recall@10']:.4f}; "
            + ", ".join(f"{name} {parts[name]['last']['recall@10']:.4f}" for name in against)
            + " (goal: at least both)"
        )


def part2(batches):
    print(f"\n2. competition scale (synthetic): seconds per training target, {batches} batches timed", flush=True)
    raw = competition_scale_raw()
    rows = []
    for label, model, extra in SCALE_MODELS:
        times = {}
        for epoch, steps in (("one pass (the last release)", 1), ("min_epoch_steps (now)", None)):
            args = [sys.executable, __file__, "--child", model, f"--batches={batches}", f"data={raw}", *extra]
            args += [f"min_epoch_steps={steps}"] if steps else []
            result = json.loads(measured(args)[2].strip().splitlines()[-1])
            times[epoch] = result["seconds"] / result["targets"]
            rows.append((label, epoch, result["batches"], f"{result['targets']:,}", f"{1e6 * times[epoch]:.1f}"))
        rows[-1] += (f"{times['min_epoch_steps (now)'] / times['one pass (the last release)']:.2f}x",)
        rows[-2] += ("",)
    print(table(rows, ("model", "epoch", "batches / epoch", "targets timed", "us / target", "ratio (goal <= 1.5x)")))


def child(model, batches, overrides):
    """In a fresh process: the first `batches` batches of an epoch as pipeline.fit builds it; one JSON line."""
    from recbole.utils import init_seed

    from recbole_ext.data.dataset import History, RepeatedPasses, load_dataset, train_loader
    from recbole_ext.patches import registry
    from recbole_ext.quick_start.pipeline import prepare_data
    from recbole_ext.trainer.early_stopping import holdout_trainer
    from recbole_ext.trainer.recbole_config import recbole_config

    settings = load_settings(
        model, overrides=[*QUIET, f"data_dir={BENCH_DATA / 'members-data'}", *overrides], quick=True
    )
    prepared = prepare_data(settings)
    config = recbole_config(settings, prepared.data_path, prepared.valid_name, OUT / "checkpoints")
    init_seed(config["seed"], config["reproducibility"])
    dataset = load_dataset(config)
    history = History.from_file(dataset, prepared.inter_path(prepared.valid_name))
    loader = RepeatedPasses(train_loader(config, dataset, history), settings["min_epoch_steps"])
    network = registry.get_model(settings.model)(config, dataset)
    trainer = holdout_trainer(registry.get_trainer(config["MODEL_TYPE"], settings.model))(config, network)
    targets, started = 0, time.perf_counter()
    for step, batch in enumerate(loader):
        if step == batches:
            break
        lengths = batch[config["ITEM_LIST_LENGTH_FIELD"]]
        targets += int((lengths - int(network.TRAINING_WINDOW == "next_item")).sum())  # SASRec: L + 1 items, L targets
        trainer.train_step(batch)
    print(json.dumps({"seconds": time.perf_counter() - started, "targets": targets, "batches": len(loader)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--sample-users", type=int, default=300)
    parser.add_argument("--recbole-epochs", type=int, default=10)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.child:
        return child(args.child, args.batches, overrides)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if 1 in args.parts:
        part1(args.sample_users, args.recbole_epochs)
    if 2 in args.parts:
        part2(args.batches)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
