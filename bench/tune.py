"""EASE over 8 reg_weight values at competition scale: tune.py against RecBole's run_hyper.py way.

    python bench/tune.py [--values 100 200 ...]

Synthetic raw files with the competition's shape (bench.common). The atomic
files are prepared once, untimed, and both sides read them; both fit
movierec's registered EASE class, so what differs is the data handling and
the scheduling. Each side runs in a fresh process (wall time includes
interpreter and Ray start-up).

- movierec: ``python tune.py --config yaml/ease.yaml`` with the 8 values:
  Ray starts, the validation dataset is built once and cached, then every
  trial loads the cached dataset, fits EASE and scores the holdout (recall@10
  on the hidden items), with the resources of yaml/ease.yaml (2 CPUs per
  trial: one trial at a time on a 2-core machine; --cpu 1 runs two at a time).
- RecBole's way: for each value, what ``recbole.quick_start.objective_function``
  (the trial of run_hyper.py) does: Config -> create_dataset (reads the
  .inter with engine="python") -> data_preparation (8:1:1 random split) ->
  model -> trainer.fit(saved=True) -> evaluate(test), every trial reloading
  its data, ranking users in batches of 1024 as movierec does (RecBole's
  default eval_batch_size would rank them one by one); run one after the other, as run_hyper.py's hyperopt loop does,
  at the niceness Ray gives its workers (15), so both sides' trials get the
  same share of a busy machine. (Without objective_function's logger set-up
  and its final ``tune.report(**result)``, which current Ray rejects.)
Goal: movierec at least 2x faster.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import BENCH_DATA, competition_scale_raw, measured, table

VALUES = [100.0, 200.0, 300.0, 400.0, 500.0, 650.0, 800.0, 1000.0]  # the grid of yaml/ease.yaml
GOAL = 2.0
RAY_WORKER_NICENESS = 15  # Ray starts its worker processes at this niceness


def recbole_trials(data_path, dataset, values, checkpoints):
    """RecBole's objective_function steps, once per value; prints one JSON line per trial."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    import recbole_ext.patches.registry  # noqa: F401  (compat shims; registers movierec's EASE in RecBole's lookups)
    from atomic_data import Prepared
    from recbole_ext.config.settings import load_settings

    settings = load_settings("EASE")
    base = settings.recbole_values()  # the same EASE settings as tune.py's trials
    items = Prepared.load(data_path).counts["items"]
    # RecBole's default eval_batch_size (4096 scores) ranks 1 user per batch with 6,807 items; give it
    # the users per batch of movierec's top-k, so both rank in the same batches
    eval_batch_size = settings["predict_batch_users"] * (items + 1)
    for value in values:
        started = time.perf_counter()
        config_dict = {
            **base,
            "reg_weight": value,
            "data_path": data_path,
            "checkpoint_dir": checkpoints,
            "show_progress": False,
            "valid_metric": "recall@10",
            "eval_batch_size": eval_batch_size,
        }
        config = Config(model="EASE", dataset=dataset, config_dict=config_dict)
        init_seed(config["seed"], config["reproducibility"])
        data = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, data)
        init_seed(config["seed"], config["reproducibility"])
        model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        best_valid, _ = trainer.fit(train_data, valid_data, verbose=False, saved=True)
        test = trainer.evaluate(test_data, load_best_model=True)
        print(
            json.dumps(
                {
                    "reg_weight": value,
                    "seconds": round(time.perf_counter() - started, 1),
                    "valid recall@10": round(best_valid, 4),
                    "test recall@10": round(test["recall@10"], 4),
                    "model": type(model).__module__ + "." + type(model).__name__,
                }
            ),
            flush=True,
        )


def tune_search(raw, data_dir, output, values, cpu=None):
    """tune.py in a fresh process; returns seconds, peak MB, its printed table, mean step timings."""
    grid = "{grid: [" + ", ".join(map(str, values)) + "]}"
    extra = [f"tune.resources_per_trial.cpu={cpu}"] if cpu else []
    args = [
        sys.executable,
        "tune.py",
        "--config",
        "yaml/ease.yaml",
        "--data",
        str(raw),
        "--output",
        str(output),
        f"data_dir={data_dir}",
        "show_progress=false",
        "state=WARNING",
        f"tune.search_space={{reg_weight: {grid}}}",
        *extra,
    ]
    seconds, peak, stdout = measured(args)
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["trial", "state"])
    summaries = [json.loads(p.read_text()) for p in output.glob("trials/*/summary.json")]
    steps = {step: sum(s["timings"][step] for s in summaries) / len(summaries) for step in summaries[0]["timings"]}
    return seconds, peak, "\n".join(lines[start : start + len(values) + 1]), steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--values", type=float, nargs="+", default=VALUES)
    parser.add_argument("--cpu", type=float, help="CPUs per trial (default: yaml/ease.yaml's)")
    parser.add_argument(
        "--recbole-trials", nargs=3, metavar=("DATA_PATH", "DATASET", "CHECKPOINTS"), help=argparse.SUPPRESS
    )  # the RecBole side, in its own process
    args = parser.parse_args()
    if args.recbole_trials:
        return recbole_trials(*args.recbole_trials[:2], args.values, args.recbole_trials[2])

    raw = competition_scale_raw()
    work = Path(tempfile.mkdtemp(prefix="tune-", dir=BENCH_DATA))
    try:
        from recbole_ext.config.settings import load_settings
        from recbole_ext.quick_start.pipeline import prepare_data

        data_dir = work / "data"
        prepared = prepare_data(load_settings("EASE", overrides=[f"data={raw}", f"data_dir={data_dir}"]))
        print(
            f"data: {prepared.counts['users']} users, {prepared.counts['items']} items, "
            f"{prepared.counts['interactions']} interactions (atomic files prepared untimed)",
            flush=True,
        )
        load = [os.getloadavg()[0]]  # the machine may be shared: say how busy it was around each side
        ours, ours_mb, ours_table, trial_timings = tune_search(raw, data_dir, work / "search", args.values, args.cpu)
        load.append(os.getloadavg()[0])
        theirs, theirs_mb, theirs_out = measured(
            [
                sys.executable,
                "bench/tune.py",
                "--recbole-trials",
                str(prepared.data_path),
                prepared.name,
                str(work / "checkpoints"),
                "--values",
                *map(str, args.values),
            ],
            preexec_fn=lambda: os.nice(RAY_WORKER_NICENESS),
        )
        load.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\nmovierec tune.py, its table:\n" + ours_table)
    print(
        "\nmovierec trials, seconds per pipeline step (mean over trials): "
        + ", ".join(f"{step} {seconds:.1f}" for step, seconds in trial_timings.items())
    )
    print("\nRecBole's way, per trial:")
    print("\n".join("  " + line for line in theirs_out.splitlines() if line.startswith("{")))
    n = len(args.values)
    cpus = args.cpu or f"{load_settings('EASE')['tune']['resources_per_trial']['cpu']} (yaml/ease.yaml)"
    rows = [
        (f"movierec: tune.py, {n} trials, {cpus} CPUs per trial", f"{ours:.1f}", f"{ours_mb:.0f}"),
        (f"RecBole's run_hyper way: {n} trials, each reloading its data", f"{theirs:.1f}", f"{theirs_mb:.0f}"),
    ]
    print("\n" + table(rows, ("search", "wall seconds", "peak MB (main process)")))
    ratio = theirs / ours
    print(
        f"\n1-minute load average on {os.cpu_count()} CPUs: {load[0]:.1f} at the start, {load[1]:.1f} between "
        f"the two searches, {load[2]:.1f} at the end (above {os.cpu_count()}: others were using the machine)"
    )
    print(f"\nspeed-up: {ratio:.2f}x  (goal >= {GOAL:.1f}x: {'met' if ratio >= GOAL else 'NOT met'})")


if __name__ == "__main__":
    main()
