"""movierec's EASE against RecBole's, and UserEASE: fit time and memory at competition scale, Recall@10.

    python bench/ease.py [--repeats N] [--no-user-ease]

Part 1, synthetic data of the competition's shape (31,360 users, 6,807
items, 4.84M interactions in the -val dataset, the same for every model).
Each fit runs in its own process after loading the same cached RecBole
dataset the same way; the clock covers the closed form only: RecBole's
EASE computes it in its constructor, movierec's in the constructor (X) plus
``fit()``. CPU seconds (all threads) stand next to wall seconds: when
others load the machine, multi-threaded steps lose the most wall time.
Memory: resident size before the fit and the peak during it (the peak
counter is reset after the dataset is loaded), and the peak while loading;
for UserEASE also its own estimate, which it refuses to start above. The
first fit of each model is also scored on the holdout (Recall@10 with its
interval and parts). UserEASE (the hybrid of yaml/userease.yaml: the user
Gram of 31,360 users, minutes on a CPU) is fitted once, not --repeats times.
The fits run with OMP_WAIT_POLICY=PASSIVE unless the environment sets it:
on a shared CPU spinning OpenMP threads made the inverse 5x slower.
Part 2, the embedded MovieLens-100K: holdout Recall@10 of the full
pipeline (run.py) for each model, same reg_weight, and UserEASE's sides.
Goals: >= 3x faster on CPU, no more memory, Recall@10 within 0.002.
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
from bench.common import BENCH_DATA, HOLDOUT_HEADER, competition_scale_raw, holdout_columns, measured, memory_mb, table

DATA_DIR = BENCH_DATA / "ease"
ITEM_FIELDS = "load_col={inter: [user_id, item_id, timestamp], item: [item_id, genre, director, writer, year]}"
SCALE_MODELS = [  # label, model, overrides
    ("movierec EASE (float32)", "EASE", []),
    (
        "movierec EASE + side info (genre, director, writer, year)",
        "EASE",
        [ITEM_FIELDS, "side_weights={genre: 5.0, director: 5.0, writer: 5.0, year: 5.0}"],
    ),
    ("RecBole EASE", "RecBoleEASE", []),
    ("movierec UserEASE hybrid (yaml: user λ 4573, item λ 660, w 0.5)", "UserEASE", []),
]
ONCE = {"UserEASE"}  # minutes per fit on a CPU: fitted once
ML100K_FIELDS = "load_col={inter: [user_id, item_id, timestamp], item: [item_id, genre, year]}"
ML100K_MODELS = [
    ("movierec EASE", "EASE", []),
    ("movierec EASE + genre (w 5)", "EASE", [ML100K_FIELDS, "side_weights={genre: 5.0}"]),
    ("movierec EASE + genre, year (w 5, 5)", "EASE", [ML100K_FIELDS, "side_weights={genre: 5.0, year: 5.0}"]),
    ("RecBole EASE", "RecBoleEASE", []),
    ("UserEASE, the user side alone (user λ 400)", "UserEASE", ["item_weight=0", "user_reg_weight=400"]),
    ("UserEASE hybrid (item λ 400, user λ 400, w 0.5)", "UserEASE", ["item_reg_weight=400", "user_reg_weight=400"]),
    ("UserEASE hybrid, yaml (item λ 660, user λ 4573, w 0.5)", "UserEASE", []),
]


def with_reg(model, reg):
    """reg_weight=reg for the models that have it (EASE, RecBole's EASE); UserEASE keeps its own."""
    from recbole_ext.patches import registry

    return [f"reg_weight={reg}"] if "reg_weight" in registry.model_properties(model) else []


def fit_child(model_name, overrides, load_only, score):
    """In a fresh process: load the dataset, then time the closed form; prints one JSON line."""
    from recbole_ext.config.settings import load_settings
    from recbole_ext.data.dataset import load_dataset
    from recbole_ext.patches import registry
    from recbole_ext.quick_start.pipeline import prepare_data
    from recbole_ext.trainer.recbole_config import recbole_config

    settings = load_settings(
        model_name, overrides=[f"data={competition_scale_raw()}", f"data_dir={DATA_DIR}", "state=WARNING", *overrides]
    )
    prepared = prepare_data(settings)
    checkpoints = tempfile.mkdtemp(prefix="ease-bench-")
    config = recbole_config(settings, prepared.data_path, prepared.valid_name, checkpoints)
    dataset = load_dataset(config)  # cached after the first (load_only) run
    os.rmdir(checkpoints)
    if load_only:
        return
    gc.collect()
    before, load_peak = memory_mb()
    Path("/proc/self/clear_refs").write_text("5")  # peak resident size := current
    started, cpu_started = time.perf_counter(), time.process_time()
    model = registry.get_model(model_name)(config, dataset)
    if model_name != "RecBoleEASE":  # RecBole's EASE fits in its constructor
        model.fit()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    _, peak = memory_mb()
    estimate = model.memory_needed() / 2**20 if hasattr(model, "memory_needed") else None
    print(
        json.dumps(
            {
                "holdout": holdout_scores(model, dataset, prepared, settings) if score else None,
                "estimate_mb": estimate,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "before_mb": before,
                "fit_peak_mb": peak,
                "load_peak_mb": load_peak,
                "users": dataset.user_num - 1,
                "items": dataset.item_num - 1,
                "interactions": len(dataset.inter_feat),
            }
        )
    )


def holdout_scores(model, dataset, prepared, settings):
    """The fitted model's holdout scores, as a run's summary holds them (holdout, holdout_detail)."""
    import pandas as pd

    from recbole_ext.data.dataset import History
    from recbole_ext.evaluator.metrics import holdout_detail, mean_scores
    from recbole_ext.trainer.early_stopping import HoldoutScorer

    history = History.from_file(dataset, prepared.inter_path(prepared.valid_name))
    scorer = HoldoutScorer(dataset, history, pd.read_csv(prepared.holdout_path), settings["predict_batch_users"])
    scorer(model)
    return {"holdout": mean_scores(scorer.best_users), "holdout_detail": holdout_detail(scorer.best_users)}


def competition_scale(repeats, reg, models):
    def child(model, overrides, load_only=False, score=False):
        flags = ["--load-only"] * load_only + ["--score"] * score
        args = [sys.executable, "bench/ease.py", "--child", model, *flags, *with_reg(model, reg), *overrides]
        return measured(args, env={"OMP_WAIT_POLICY": "PASSIVE", **os.environ})  # see docs/models.md, EASE

    print("building the datasets (cached after the first run) ...", flush=True)
    for _, model, overrides in models:
        child(model, overrides, load_only=True)
    runs = {label: [] for label, _, _ in models}
    for repeat in range(repeats):  # interleaved, so load from others hits every model alike
        for label, model, overrides in models:
            if repeat and model in ONCE:
                continue
            load = os.getloadavg()[0]  # 1-minute load average when the run starts
            result = json.loads(child(model, overrides, score=not repeat)[2].strip().splitlines()[-1])
            runs[label].append({**result, "load": load})
    return runs


def ml100k_recall(reg):
    from recbole_ext.config.settings import load_settings
    from recbole_ext.quick_start.pipeline import run

    summaries = {}
    with tempfile.TemporaryDirectory(prefix="ease-bench-", dir=BENCH_DATA) as out:
        for i, (label, model, overrides) in enumerate(ML100K_MODELS):
            common = [f"data_dir={DATA_DIR}", f"output_dir={out}/{i}", "state=WARNING", "show_progress=false"]
            summaries[label] = run(load_settings(model, overrides=common + with_reg(model, reg) + overrides))
    return summaries


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed fits per model (default 2)")
    parser.add_argument("--no-user-ease", action="store_true", help="leave out UserEASE at competition scale")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--score", action="store_true", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.child:
        return fit_child(args.child, overrides, args.load_only, args.score)

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    from recbole_ext.config.settings import load_settings

    reg = load_settings("EASE")["reg_weight"]  # yaml/ease.yaml; RecBole's EASE gets the same
    models = [entry for entry in SCALE_MODELS if not (args.no_user_ease and entry[1] == "UserEASE")]
    runs = competition_scale(args.repeats, reg, models)
    summaries = ml100k_recall(reg)
    recall = {label: summary["holdout"]["recall@10"] for label, summary in summaries.items()}
    print(f"load average after: {os.getloadavg()[0]:.2f}")

    shape = next(iter(runs.values()))[0]
    print(
        f"\ncompetition-scale synthetic -val dataset: {shape['users']} users x {shape['items']} items, "
        f"{shape['interactions']} interactions; reg_weight {reg}"
    )
    rows = []
    for label, results in runs.items():
        rows.append(
            (
                label,
                " / ".join(f"{r['seconds']:.2f}" for r in results),
                " / ".join(f"{r['cpu_seconds']:.2f}" for r in results),
                " / ".join(f"{r['load']:.1f}" for r in results),
                f"{max(r['before_mb'] for r in results):.0f}",
                f"{max(r['fit_peak_mb'] for r in results):.0f}",
                f"{max(r['fit_peak_mb'] - r['before_mb'] for r in results):.0f}",
                f"{max(r['load_peak_mb'] for r in results):.0f}",
                "" if results[0]["estimate_mb"] is None else f"{results[0]['estimate_mb']:.0f}",
            )
        )
    print(
        table(
            rows,
            (
                "model",
                "fit seconds (each run)",
                "CPU seconds",
                "load at start",
                "MB before fit",
                "peak MB in fit",
                "fit adds MB",
                "peak MB in load",
                "its estimate MB",
            ),
        )
    )
    print("\nthe same, holdout of the synthetic data (first fit of each):")
    print(table([(label, *holdout_columns(r[0]["holdout"])) for label, r in runs.items()], ("model", *HOLDOUT_HEADER)))

    print(f"\nembedded MovieLens-100K, holdout (pipeline, reg_weight {reg} for EASE):")
    print(table([(label, *holdout_columns(s)) for label, s in summaries.items()], ("model", *HOLDOUT_HEADER)))

    ours, side, recbole = (runs[label] for label, _, _ in SCALE_MODELS[:3])
    best = {name: min(r["seconds"] for r in results) for name, results in (("ours", ours), ("recbole", recbole))}
    peak = {name: max(r["fit_peak_mb"] for r in results) for name, results in (("ours", ours), ("recbole", recbole))}
    gap = recall["movierec EASE"] - recall["RecBole EASE"]
    side_gap = recall[ML100K_MODELS[1][0]] - recall["movierec EASE"]
    print(f"\nspeed: RecBole / movierec fit time (best runs) = {best['recbole'] / best['ours']:.2f}x  (goal >= 3x)")
    print(f"memory: movierec / RecBole peak in fit = {peak['ours'] / peak['recbole']:.2f}  (goal <= 1.00)")
    print(f"recall@10: movierec - RecBole = {gap:+.4f}  (goal within 0.002)")
    print(
        f"side information: {ML100K_MODELS[1][0]} - movierec EASE = {side_gap:+.4f} recall@10 on MovieLens-100K; "
        f"fit with 4 side fields at competition scale {min(r['seconds'] for r in side):.2f} s "
        f"vs {best['ours']:.2f} s without"
    )
    user = runs.get(SCALE_MODELS[3][0])
    if user:
        user, scored = user[0], {label: r[0]["holdout"]["holdout"]["recall@10"] for label, r in runs.items()}
        print(
            f"UserEASE hybrid at competition scale: fit {user['seconds']:.0f} s, peak {user['fit_peak_mb']:.0f} MB "
            f"(its estimate {user['estimate_mb']:.0f} MB), recall@10 {scored[SCALE_MODELS[3][0]]:.4f} "
            f"vs EASE's {scored[SCALE_MODELS[0][0]]:.4f} on the synthetic holdout"
        )


if __name__ == "__main__":
    main()
