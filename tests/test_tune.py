"""tune.py with a real Ray runtime on tiny data: sampled values reach the model,
ASHA stops a poor trial, a crashing trial is recorded, --resume repeats
nothing, best.yaml re-runs with run.py, --address attaches to a cluster.

One local Ray runtime serves the in-process searches of this module; the
interrupted search and the cluster search run tune.py in a subprocess.
"""

import datetime
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
from conftest import wait_for

import yaml
from recbole_ext import ConfigError
from recbole_ext.config.settings import load_settings
from recbole_ext.evaluator.metrics import split_users
from recbole_ext.tune.driver import start_ray
from recbole_ext.tune.space import parse_tune
from recbole_ext.tune.trial import trial_resources
from run import main as run_cli
from tune import main as tune_cli

ROOT = Path(__file__).resolve().parent.parent
TINY = {"show_progress": False, "state": "WARNING", "train_batch_size": 256, "holdout": {"min_train": 8, "random": 3}}
BPR = {"model": "BPR", "embedding_size": 16, **TINY}
SASREC = {"model": "SASRec", "MAX_ITEM_LIST_LENGTH": 10, "hidden_size": 16, "inner_size": 32, "n_layers": 1, **TINY}


@pytest.fixture(scope="module")
def ray_runtime():
    assert start_ray()  # a fresh local runtime, shared by this module's in-process searches
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tune_data")  # prepared files and dataset caches, shared


def write_yaml(path, values):
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def cli_args(config, tiny_raw, data_dir, output, *extra):
    return ["--config", str(config), "--data", str(tiny_raw), "--output", str(output), f"data_dir={data_dir}", *extra]


def read_trials(output):
    return pd.read_csv(output / "trials.csv", keep_default_na=False, na_values=[""])


# ---------------------------------------------------------------------------
# the tune: section is checked before anything runs


def settings_with(tmp_path, tiny_raw, tune, model="EASE", **values):
    config = write_yaml(tmp_path / "search.yaml", {"model": model, **values, "tune": tune})
    return load_settings(config_file=config, overrides=[f"data={tiny_raw}"]), config


@pytest.mark.parametrize(
    "tune, expected",
    [
        (
            {"search_space": {"reg_weight": {"lognormal": [1, 2]}}},
            "tune.search_space.reg_weight: unknown distribution 'lognormal'",
        ),
        (
            {"search_space": {"learning_rate": {"loguniform": [1.0e-2, 1.0e-4]}}},
            "tune.search_space.learning_rate: loguniform: low must be below high",
        ),
        ({"search_space": {"learning_rate": {"loguniform": [0, 1.0e-2]}}}, "a log scale needs low > 0"),
        ({"search_space": {"epochs": {"randint": [1.5, 3]}}}, "randint: expected integers"),
        (
            {"search_space": {"reg_wieght": {"choice": [1, 2]}}},
            "unknown setting 'reg_wieght' for EASE; did you mean 'reg_weight'?",
        ),
        ({"search_space": {"data": {"choice": ["a", "b"]}}}, "'data' cannot be searched"),
        (
            {"search_space": {"user_inter_num_interval": {"choice": ["[5,inf)"]}}},
            "'user_inter_num_interval' cannot be searched: it is managed by movierec: RecBole's filters would drop",
        ),
        ({"search_space": {"holdout.seed": {"choice": [1, 2]}}}, "dotted keys cannot be searched"),
        (
            {"search_space": {"filter": {"grid": [{"future_items": 2}, {"future_items": -1}]}}},
            "tune.search_space.filter: filter.future_items must be an integer >= 0 or ~ (off), got -1",
        ),
        ({"search_space": {"reg_weight": [1, 2]}}, "tune.search_space.reg_weight: expected {distribution: arguments}"),
        ({"search_space": {"reg_weight": {"grid": [1, 2]}}, "search": "optuna"}, "grid needs search: random"),
        (
            {"search_space": {"valid_metric": {"choice": ["recall@10", "mrr@10"]}}},
            "valid_metric must be recall@10 or ndcg@10, of all users, of one holdout part (`recall@10 last`, "
            "`recall@10 random`), or a mix of the parts: `recall@10 last:0.4` (the last part's share) or "
            "`recall@10 calibrated` (the share the leaderboard log estimates), got 'mrr@10'",
        ),
        ({"num_sample": 3, "search_space": {"reg_weight": {"choice": [1, 2]}}}, "did you mean 'num_samples'?"),
        (
            {"search_space": {"reg_weight": {"choice": [1, 2]}}, "scheduler": {"asha": {"grace_period": 200}}},
            "grace_period 200 exceeds max_t 100",
        ),
        (
            {"search_space": {"reg_weight": {"choice": [1, 2]}}, "scheduler": "hyperband"},
            "tune.scheduler: expected one of",
        ),
        (
            {"search_space": {"reg_weight": {"choice": [1, 2]}}, "resources_per_trial": {"gpus": 1}},
            "unknown resource 'gpus'; did you mean 'gpu'?",
        ),
        (
            {"search_space": {"reg_weight": {"choice": [1, 2]}}, "metric": "mrr@10"},
            "tune.metric must be recall@10 or ndcg@10",
        ),
        ({"search_space": {}}, "tune.search_space must map settings to distributions"),
        (
            {"search_space": {"reg_weight": {"choice": [100, "abc"]}}},
            "tune.search_space.reg_weight: reg_weight must be a number >= 0, got 'abc'",
        ),
        (
            {"search_space": {"epochs": {"uniform": [1, 10]}}},
            "tune.search_space.epochs: epochs must be an integer >= 1, got 1.0 (uniform samples floats)",
        ),
        (
            {"search_space": {"learning_rate": {"uniform": [0, 0.1]}}},
            "tune.search_space.learning_rate: learning_rate must be a number > 0, got 0.0",
        ),
        (
            {"search_space": {"reg_weight": {"choice": [1, 2]}}, "resources_per_trial": {"gpu": 2}},
            "tune.resources_per_trial.gpu must be a share of one GPU in [0, 1] (a run uses one device), got 2",
        ),
    ],
)
def test_bad_tune_entries_stop_with_the_file_and_the_entry(tune, expected, tmp_path, tiny_raw):
    settings, config = settings_with(tmp_path, tiny_raw, tune)
    with pytest.raises(ConfigError) as error:
        parse_tune(settings)
    assert expected in str(error.value)
    assert str(config) in str(error.value)


def test_a_message_names_the_file_the_bad_entry_came_from(tmp_path, tiny_raw):
    # the bad search space is in the file; the command line changes another tune entry after it
    config = write_yaml(
        tmp_path / "search.yaml", {"model": "EASE", "tune": {"search_space": {"reg_weight": {"uniform": [9, 1]}}}}
    )
    settings = load_settings(config_file=config, overrides=[f"data={tiny_raw}", "tune.num_samples=2"])
    with pytest.raises(ConfigError, match=f"^{config}: tune.search_space.reg_weight: uniform: low must be below"):
        parse_tune(settings)
    shipped = load_settings("MultiVAE", overrides=[f"data={tiny_raw}", "tune.num_samples=0"])
    with pytest.raises(ConfigError, match="^command line: tune.num_samples must be an integer >= 1"):
        parse_tune(shipped)


def test_hyperopt_is_refused_only_when_missing(tmp_path, tiny_raw):
    import importlib.util

    settings, _ = settings_with(
        tmp_path, tiny_raw, {"search_space": {"reg_weight": {"uniform": [1, 9]}}, "search": "hyperopt"}
    )
    if importlib.util.find_spec("hyperopt") is None:
        with pytest.raises(ConfigError, match="hyperopt needs the hyperopt package"):
            parse_tune(settings)
    else:
        assert parse_tune(settings).search == "hyperopt"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("tune.search_space.reg_weight={normal: [1, 2]}", "unknown distribution 'normal'"),
        (
            "tune.search_space.reg_weight={choice: [abc]}",
            "command line: tune.search_space.reg_weight: reg_weight must be a number >= 0, got 'abc'",
        ),
        ("epochs=abc", "command line: epochs must be an integer >= 1, got 'abc'"),
    ],
)
def test_the_cli_reports_a_bad_entry_in_one_line_before_ray_starts(
    override, expected, tmp_path, tiny_raw, data_dir, capsys
):
    assert not ray.is_initialized()
    config = write_yaml(
        tmp_path / "ease.yaml", {"model": "EASE", "tune": {"search_space": {"reg_weight": {"grid": [1, 2]}}}}
    )
    code = tune_cli(cli_args(config, tiny_raw, data_dir, tmp_path / "out", override))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert expected in err and not (tmp_path / "out").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_refused_before_ray_starts(tmp_path, tiny_raw, data_dir):
    config = write_yaml(
        tmp_path / "ease.yaml", {"model": "EASE", "tune": {"search_space": {"reg_weight": {"grid": [1, 2]}}}}
    )
    done = subprocess.run(
        [sys.executable, "tune.py", *cli_args(config, tiny_raw, data_dir, tmp_path / "out"), "--device", "cuda"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [  # no line of Ray's start-up
        "error: device: cuda was asked for but torch sees no GPU (is the CUDA build of torch installed?)"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_a_searched_amp_the_device_cannot_run_is_refused_before_ray_starts(tmp_path, tiny_raw, data_dir, capsys):
    config = write_yaml(
        tmp_path / "sasrec.yaml",
        {**SASREC, "epochs": 1, "tune": {"scheduler": "fifo", "search_space": {"amp": {"grid": ["bf16", "fp16"]}}}},
    )
    assert tune_cli(cli_args(config, tiny_raw, data_dir, tmp_path / "out", "--device", "auto")) == 2
    assert not ray.is_initialized() and not (tmp_path / "out").exists()
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {config}: tune.search_space.amp: amp: fp16 is for GPUs without bfloat16; on a CPU use bf16 "
        "(float32's range, no gradient scaler), or off (device: cpu)"
    ]


def test_a_searched_calibrated_valid_metric_is_refused_before_ray_starts(tmp_path, tiny_raw, data_dir, capsys):
    searched = {"valid_metric": {"choice": ["recall@10", "recall@10 calibrated"]}}
    config = write_yaml(tmp_path / "ease.yaml", {"model": "EASE", "tune": {"search_space": searched}})
    assert tune_cli(cli_args(config, tiny_raw, data_dir, tmp_path / "out")) == 2
    assert not ray.is_initialized() and not (tmp_path / "out").exists()
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {config}: tune.search_space.valid_metric: `calibrated` is read from the")


def test_every_shipped_tune_section_is_valid(tiny_raw):
    for model in ("EASE", "UserEASE", "MultiVAE", "SASRec", "S3Rec"):
        spec = parse_tune(load_settings(model, overrides=[f"data={tiny_raw}"]))
        assert spec.search_space, model
    for config, searched in (("ease-future.yaml", "filter"), ("sasrec-attributes.yaml", "item_attributes")):
        spec = parse_tune(load_settings(config_file=ROOT / "yaml" / config, overrides=[f"data={tiny_raw}"]))
        assert list(spec.search_space) == [searched]


# ---------------------------------------------------------------------------
# searches on a real local Ray runtime


def test_each_trial_trains_with_its_sampled_value_and_best_yaml_reruns(ray_runtime, tmp_path, tiny_raw, data_dir):
    grid = [1.0, 10.0, 100.0, 1000.0]
    config = write_yaml(
        tmp_path / "ease.yaml", {"model": "EASE", **TINY, "tune": {"search_space": {"reg_weight": {"grid": grid}}}}
    )
    output = tmp_path / "search"
    assert tune_cli(cli_args(config, tiny_raw, data_dir, output, "--retrain-best")) == 0

    trials = read_trials(output)
    assert sorted(trials["reg_weight"]) == grid and (trials["state"] == "COMPLETED").all()
    for _, row in trials.iterrows():
        summary = json.loads((Path(row["output"]) / "summary.json").read_text())
        assert summary["config"]["recbole"]["reg_weight"] == row["reg_weight"]  # what the model was built with
        assert summary["holdout"]["recall@10"] == pytest.approx(row["recall@10"])  # the trial's own score
    assert trials["recall@10"].nunique() == len(grid)  # different values, different models
    assert list(trials["recall@10"]) == sorted(trials["recall@10"], reverse=True)
    assert (output / "trials.png").read_bytes()[:4] == b"\x89PNG"

    best_text = (output / "best.yaml").read_text()
    best = yaml.safe_load(best_text)
    check_honest_estimate(trials, best_text, seed=best["seed"])
    assert best["reg_weight"] == trials["reg_weight"][0] and best["model"] == "EASE"
    assert not {"tune", "output_dir", "quick"} & set(best) and "trials" not in best_text
    assert run_cli(["--config", str(output / "best.yaml"), "--output", str(tmp_path / "rerun")]) == 0
    rerun = json.loads((tmp_path / "rerun" / "summary.json").read_text())
    assert rerun["holdout"]["recall@10"] == pytest.approx(trials["recall@10"][0], abs=1e-6)
    # --retrain-best: the same run, with its submission, inside the search folder
    retrained = json.loads((output / "best" / "summary.json").read_text())
    assert retrained["holdout"] == rerun["holdout"] and retrained["refit_epochs"] == 1
    assert pd.read_csv(output / "best" / "submission.csv").equals(pd.read_csv(tmp_path / "rerun" / "submission.csv"))


def test_a_search_over_the_future_filter_gives_each_trial_its_filter(ray_runtime, tmp_path, tiny_raw, data_dir):
    grid = [{"future_items": None}, {"future_items": 0}]
    search = {"search_space": {"filter": {"grid": grid}}, "max_concurrent_trials": 1}
    config = write_yaml(tmp_path / "ease.yaml", {"model": "EASE", **TINY, "tune": search})
    output = tmp_path / "search"
    assert tune_cli(cli_args(config, tiny_raw, data_dir, output)) == 0
    trials = read_trials(output)
    assert (trials["state"] == "COMPLETED").all()
    filters = [
        json.loads((Path(folder) / "summary.json").read_text())["config"]["filter"] for folder in trials["output"]
    ]
    assert sorted(filters, key=str) == sorted(grid, key=str)
    assert trials["recall@10"].nunique() == 2  # the synthetic times ignore release years: the filter costs here
    assert yaml.safe_load((output / "best.yaml").read_text())["filter"] in grid


def check_honest_estimate(trials, best_text, seed):
    """trials.csv's halves and honest number, recomputed here from the trials' holdout_users.csv."""
    per_user = {
        row["trial"]: pd.read_csv(Path(row["output"]) / "holdout_users.csv", index_col="user")["recall@10"]
        for _, row in trials.iterrows()
        if row["state"] in ("COMPLETED", "STOPPED")
    }
    users = next(iter(per_user.values())).index
    half_a, half_b = split_users(users, seed)
    chosen = {}
    for name, half in (("A", half_a), ("B", half_b)):
        means = {trial: values.loc[half].mean() for trial, values in sorted(per_user.items())}
        chosen[name] = max(means, key=lambda trial: means[trial])  # the first of equal ones: trial id order
        by_trial = trials.set_index("trial")[f"recall@10 half {name}"]
        assert [by_trial[trial] for trial in means] == pytest.approx(list(means.values()), abs=1e-12)
    honest = (per_user[chosen["B"]].loc[half_a].sum() + per_user[chosen["A"]].loc[half_b].sum()) / len(users)
    best = trials.iloc[0]
    assert best["recall@10 honest"] == pytest.approx(honest, abs=1e-12)
    assert trials["recall@10 honest"].iloc[1:].isna().all()  # the search's number, on its best trial's row
    assert set(trials["chosen on"].dropna()) <= {"A", "B", "A+B"}
    assert trials.set_index("trial").loc[chosen["A"], "chosen on"] in ("A", "A+B")
    for trial, values in per_user.items():  # each trial's file holds its reported score
        assert values.mean() == pytest.approx(trials.set_index("trial").loc[trial, "recall@10"], abs=1e-6)
    assert f"recall@10 {best['recall@10']:.4f} fitted" in best_text and f"{honest:.4f} honest" in best_text


def test_an_s3rec_search_pretrains_once_and_every_trial_finetunes_from_it(ray_runtime, tmp_path, tiny_raw, data_dir):
    rates = [1.0e-4, 3.0e-3]
    config = write_yaml(
        tmp_path / "s3rec.yaml",
        {
            "model": "S3Rec",
            **TINY,
            "item_attribute": {"genre": 1.0},
            "pretrain_epochs": 1,
            "epochs": 1,
            "MAX_ITEM_LIST_LENGTH": 10,
            "hidden_size": 16,
            "inner_size": 32,
            "n_layers": 1,
            "tune": {
                "search_space": {"learning_rate": {"grid": rates}},
                "scheduler": "fifo",
                "num_samples": 1,
                "max_concurrent_trials": 2,
            },
        },
    )
    output = tmp_path / "search"
    assert tune_cli(cli_args(config, tiny_raw, data_dir, output)) == 0

    trials = read_trials(output)
    assert sorted(trials["learning_rate"]) == rates and (trials["state"] == "COMPLETED").all()
    summaries = [json.loads((Path(row["output"]) / "summary.json").read_text()) for _, row in trials.iterrows()]
    # the search pretrained before the trials: both found the checkpoint and loaded it
    assert [s["pretraining"]["cached"] for s in summaries] == [True, True]
    assert len({s["pretraining"]["checkpoint"] for s in summaries}) == 1
    assert all(s["pretraining"]["downstream_model"] == "SASRec" for s in summaries)
    assert all(any(name.startswith("item_embedding") for name in s["pretrained_tensors"]["loaded"]) for s in summaries)
    assert sorted(s["config"]["recbole"]["learning_rate"] for s in summaries) == rates
    assert len(list(Path(summaries[0]["pretraining"]["checkpoint"]).parent.glob("pretrained-S3Rec-*.pth"))) == 1


def test_a_calibrated_tune_metric_ranks_the_trials_by_the_share_it_prints(
    ray_runtime, tmp_path, tiny_raw, data_dir, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # where the leaderboard listing writes outputs/leaderboard.json
    (tmp_path / "outputs").mkdir()
    # 0.4: the holdout's 2 latest of 5 items measure it (a larger estimate is used as far as that: test_calibration)
    estimate = {"board": "public", "last_share": 0.4, "interval": [0.3, 0.5], "submissions": 5}
    (tmp_path / "outputs" / "leaderboard.json").write_text(json.dumps({"calibration": estimate}))
    search = {"search_space": {"reg_weight": {"grid": [1.0, 100.0, 10000.0]}}, "metric": "recall@10 calibrated"}
    config = write_yaml(tmp_path / "ease.yaml", {"model": "EASE", **TINY, "tune": search})
    output = tmp_path / "search"
    assert tune_cli(cli_args(config, tiny_raw, data_dir, output)) == 0
    assert "tune.metric: recall@10 calibrated: the last part's share 0.4 (95% interval 0.30 to 0.50" in (
        capsys.readouterr().err
    )
    trials = read_trials(output)
    metric = "recall@10 last:0.4"
    for _, row in trials.iterrows():  # each trial's score: 0.4 * last + 0.6 * random of each user, averaged
        users = pd.read_csv(Path(row["output"]) / "holdout_users.csv", index_col="user")
        mixed = (0.4 * users["recall@10 last"] + 0.6 * users["recall@10 random"]).fillna(users["recall@10 last"])
        assert row[metric] == pytest.approx(mixed.fillna(users["recall@10 random"]).mean(), abs=1e-6)
    assert trials[metric].nunique() == 3 and list(trials[metric]) == sorted(trials[metric], reverse=True)
    assert f"{metric} honest" in trials


def test_max_concurrent_trials_runs_one_trial_at_a_time(ray_runtime, tmp_path, tiny_raw, data_dir):
    # half a CPU per trial: without the limit Ray would run four side by side on two CPUs
    config = write_yaml(
        tmp_path / "ease.yaml",
        {
            "model": "EASE",
            **TINY,
            "tune": {
                "search_space": {"reg_weight": {"grid": [1.0, 10.0, 100.0]}},
                "resources_per_trial": {"cpu": 0.5},
                "max_concurrent_trials": 1,
            },
        },
    )
    output = tmp_path / "search"
    assert tune_cli(cli_args(config, tiny_raw, data_dir, output)) == 0
    spans = []
    for path in (output / "trials").glob("*/summary.json"):
        summary = json.loads(path.read_text())
        end = datetime.datetime.fromisoformat(summary["created"]).timestamp()
        spans.append((end - sum(summary["timings"].values()), end))
    assert len(spans) == 3
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end - 0.002  # "created" has milliseconds


def test_trial_resources_follow_the_device_and_the_cluster(ray_runtime, tmp_path, tiny_raw, caplog):
    settings, _ = settings_with(
        tmp_path,
        tiny_raw,
        {"search_space": {"reg_weight": {"choice": [1, 2]}}, "resources_per_trial": {"cpu": 64, "gpu": 0.25}},
    )
    spec = parse_tune(settings)
    cpus, gpus = ray.cluster_resources()["CPU"], ray.cluster_resources().get("GPU", 0)
    driver_log = logging.getLogger("movierec.tune")  # tune.py's main stops its propagation
    driver_log.addHandler(caplog.handler)
    try:
        assert trial_resources(spec.resources, "cpu") == {"cpu": cpus, "gpu": 0}
        assert "trials run on CPU (device is cpu): the GPU share of 0.25 per trial is dropped" in caplog.text
        assert f"each trial gets {cpus:g} CPUs, the most a Ray node has, not the 64 asked for" in caplog.text
        if gpus:
            assert trial_resources(spec.resources, "auto") == {"cpu": cpus, "gpu": 0.25}
        else:  # a machine without a GPU runs the same yaml on CPU
            assert trial_resources(spec.resources, "auto") == {"cpu": cpus, "gpu": 0}
            assert "(the Ray cluster has no GPU)" in caplog.text
            with pytest.raises(ConfigError, match="device: cuda, but the Ray cluster has no GPU"):
                trial_resources(spec.resources, "cuda")
    finally:
        driver_log.removeHandler(caplog.handler)


def test_trials_on_cpu_though_the_cluster_has_a_gpu_are_logged(tmp_path, tiny_raw, caplog):
    settings, _ = settings_with(
        tmp_path,
        tiny_raw,
        {"search_space": {"reg_weight": {"choice": [1, 2]}}, "resources_per_trial": {"cpu": 1, "gpu": 0}},
    )
    spec = parse_tune(settings)
    driver_log = logging.getLogger("movierec.tune")
    driver_log.addHandler(caplog.handler)
    try:
        gpu_node = {"CPU": 8, "GPU": 2}
        assert trial_resources(spec.resources, "cpu", [gpu_node]) == {"cpu": 1, "gpu": 0}
        assert caplog.text == ""  # asked for
        assert trial_resources(spec.resources, "auto", [gpu_node]) == {"cpu": 1, "gpu": 0}
        assert "trials run on CPU though the Ray cluster has GPUs: tune.resources_per_trial.gpu is 0" in caplog.text
    finally:
        driver_log.removeHandler(caplog.handler)


@pytest.fixture(scope="module")
def asha_search(ray_runtime, tmp_path_factory, tiny_raw, data_dir):
    """BPR, one trial at a time: two good learning rates, a poor one, one that blows up to NaN."""
    folder = tmp_path_factory.mktemp("asha")
    config = write_yaml(
        folder / "bpr.yaml",
        {
            **BPR,
            "epochs": 4,
            "tune": {
                "search_space": {"learning_rate": {"grid": [0.02, 0.01, 1.0e-7, 1.0e30]}},
                "scheduler": {"asha": {"grace_period": 1, "reduction_factor": 2}},
                "max_concurrent_trials": 1,
            },
        },
    )
    code = tune_cli(cli_args(config, tiny_raw, data_dir, folder / "search"))
    return code, folder / "search", read_trials(folder / "search").set_index("learning_rate")


def test_asha_stops_a_poor_trial_early(asha_search):
    code, _, trials = asha_search
    assert code == 0
    first, poor = trials.loc[0.02], trials.loc[1.0e-7]
    # the first trial is the first at every rung: nothing to compare with, it runs all 4 epochs
    assert first["state"] == "COMPLETED" and first["epochs"] == 4
    assert poor["state"] == "STOPPED" and poor["epochs"] < 4
    assert poor["recall@10"] < first["recall@10"]
    assert (
        (Path(poor["output"]) / "error.txt")
        .read_text()
        .strip()
        .endswith(f"stopped by Ray Tune after epoch {poor['epochs']:.0f}")
    )
    # a stopped trial keeps the per-user scores of its best evaluation: it takes part in the honest estimate
    assert pd.notna(poor["recall@10 half A"]) and pd.notna(poor["recall@10 half B"])


def test_a_crashing_trial_is_recorded_and_the_others_finish(asha_search):
    code, output, trials = asha_search
    crashed = trials.loc[1.0e30]
    assert crashed["state"] == "ERROR" and crashed["error"] == "ValueError: Training loss is nan"
    assert pd.isna(crashed["recall@10 half A"])
    assert "Training loss is nan" in (Path(crashed["output"]) / "error.txt").read_text()
    assert trials.drop(index=1.0e30)["state"].isin(["COMPLETED", "STOPPED"]).all()
    best_text = (output / "best.yaml").read_text()
    best = yaml.safe_load(best_text)
    assert best["learning_rate"] == trials["recall@10"].idxmax()
    check_honest_estimate(read_trials(output), best_text, seed=best["seed"])


def test_resume_finishes_a_search_stopped_by_sigterm_without_repeating_a_trial(
    ray_runtime, tmp_path, tiny_raw, data_dir
):
    grid = [0.02, 0.015, 0.01, 0.005]
    config = write_yaml(
        tmp_path / "bpr.yaml",
        {**BPR, "epochs": 6, "tune": {"search_space": {"learning_rate": {"grid": grid}}, "max_concurrent_trials": 1}},
    )
    output = tmp_path / "search"
    driver = subprocess.Popen(
        [sys.executable, "tune.py", *cli_args(config, tiny_raw, data_dir, output)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as under `timeout`, SLURM or Kubernetes
    )
    try:
        wait_for(lambda: list(output.glob("trials/*/summary.json")), timeout=240)
        # SIGTERM to the whole group, as `timeout` sends it: the driver and every Ray process it started;
        # as Ctrl-C: Ray Tune saves its state and stops, within the 30 s schedulers wait before SIGKILL
        os.killpg(driver.pid, signal.SIGTERM)
        stopped = time.monotonic()
        log = driver.communicate(timeout=60)[0]
        seconds = time.monotonic() - stopped
    finally:
        driver.kill()
    assert driver.returncode == 130, log[-3000:]
    assert seconds < 30 and "interrupted; continue with: python tune.py --resume" in log, log[-3000:]
    finished = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in output.glob("trials/*/summary.json")}
    assert finished and len(finished) < len(grid)
    interrupted = read_trials(output)
    # a trial cut short, or grid points not started yet
    assert (interrupted["state"] == "INTERRUPTED").any() or len(interrupted) < len(grid)
    cut_short = interrupted.loc[interrupted["state"] == "INTERRUPTED", "trial"]
    assert not [p.name for trial in cut_short for p in output.glob(f"trials/{trial}.stopped")]  # .interrupted/
    assert not (output / "best.yaml").exists()

    assert tune_cli(["--resume", "--output", str(output)]) == 0
    trials = read_trials(output)
    assert sorted(trials["learning_rate"]) == sorted(grid) and trials["trial"].is_unique
    assert (trials["state"] == "COMPLETED").all()
    assert set(interrupted["trial"]) <= set(trials["trial"])
    for path, (content, mtime) in finished.items():  # trials finished before the interruption did not run again
        assert path.read_bytes() == content and path.stat().st_mtime_ns == mtime
    assert (output / "best.yaml").is_file()


def test_resume_refuses_changed_settings(ray_runtime, tmp_path, tiny_raw, data_dir, capsys):
    config = write_yaml(
        tmp_path / "ease.yaml", {"model": "EASE", **TINY, "tune": {"search_space": {"reg_weight": {"grid": [10.0]}}}}
    )
    output = tmp_path / "search"
    assert tune_cli(cli_args(config, tiny_raw, data_dir, output)) == 0
    assert tune_cli(["--resume", "--output", str(output), "tune.num_samples=3"]) == 2
    assert "settings differ from the search" in capsys.readouterr().err
    assert tune_cli(["--resume", "--output", str(tmp_path / "nothing")]) == 2


def test_search_on_a_ray_cluster_with_address(tmp_path, tiny_raw, data_dir, ray_cluster):
    """Run from another folder with relative paths: neither the driver nor the cluster's workers rely
    on the working directory to find the project or the files."""
    config = write_yaml(
        tmp_path / "ease.yaml",
        {"model": "EASE", **TINY, "tune": {"search_space": {"reg_weight": {"grid": [10.0, 100.0]}}}},
    )
    output = tmp_path / "search"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tune.py"),
            *cli_args(config.name, tiny_raw, data_dir, output.name),
            "--address",
            ray_cluster.address,
        ],
        cwd=tmp_path,
        env=ray_cluster.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    trials = read_trials(output)
    assert sorted(trials["reg_weight"]) == [10.0, 100.0] and (trials["state"] == "COMPLETED").all()
    for result in output.glob("ray/*/result.json"):  # each trial ran in a worker process of that cluster
        assert ray_cluster.ran_in_worker(json.loads(result.read_text().splitlines()[-1])["pid"])
