"""Experiment tracking, read back from a real MLflow (its local SQLite store, no server) and from the run folder
W&B writes offline: a run, a 2-trial search and a 2-member blend."""

import json
import struct
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import ray
import wandb
from conftest import wait_for
from test_pipeline import recall_at_10_by_hand, tiny_settings
from wandb.proto import wandb_internal_pb2

import yaml
from recbole_ext import ConfigError
from recbole_ext.config.settings import load_settings
from recbole_ext.quick_start.pipeline import run
from recbole_ext.tune.driver import start_ray
from run import main as run_cli
from tune import main as tune_cli

BPR = ["epochs=3", "embedding_size=16"]
TINY = {"show_progress": False, "state": "WARNING", "train_batch_size": 256, "holdout": {"min_train": 8, "random": 3}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tracking_data")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One MLflow database for the module (making its tables takes seconds); each test logs to its own project."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def ray_runtime():
    assert start_ray()
    yield
    ray.shutdown()


def mlflow_runs(store, project):
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name(project).experiment_id
    return client, {r.info.run_name: r for r in client.search_runs([experiment])}


def artifact_names(client, run_id, path=None):
    names = []
    for entry in client.list_artifacts(run_id, path):
        names += artifact_names(client, run_id, entry.path) if entry.is_dir else [entry.path]
    return sorted(names)


def folder_files(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())


def test_a_run_logs_its_settings_epochs_holdout_scores_and_files_to_mlflow(tiny_raw, data_dir, tmp_path, store):
    output = tmp_path / "bpr"
    tracking = ["tracking.backend=mlflow", f"tracking.uri={store}", "tracking.project=runs"]
    summary = run(tiny_settings("BPR", tiny_raw, data_dir, output, BPR + tracking))

    client, runs = mlflow_runs(store, "runs")
    logged = runs["bpr"]
    assert logged.info.status == "FINISHED" and logged.data.tags["kind"] == "run"
    params = logged.data.params
    assert params["model"] == "BPR" and params["epochs"] == "3" and params["embedding_size"] == "16"
    assert params["holdout.random"] == "3" and params["data_fingerprint"] == summary["data"]["fingerprint"]
    history = client.get_metric_history(logged.info.run_id, "valid/recall_at_10")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["recall@10"]) for r in summary["valid_history"]]
    assert len(history) == 3

    metrics = logged.data.metrics
    holdout = pd.read_csv(summary["data"]["holdout_path"])
    valid_top = pd.read_csv(output / "valid_top50.csv")
    assert metrics["holdout/recall_at_10"] == pytest.approx(recall_at_10_by_hand(valid_top, holdout), abs=1e-12)
    last = holdout[holdout["part"] == "last"]
    assert metrics["holdout/last/recall_at_10"] == pytest.approx(recall_at_10_by_hand(valid_top, last), abs=1e-12)
    low, high = summary["holdout_detail"]["interval"]["recall@10"]
    assert (metrics["holdout/recall_at_10_low"], metrics["holdout/recall_at_10_high"]) == (low, high)
    assert metrics["holdout/users"] == holdout["user"].nunique()
    assert artifact_names(client, logged.info.run_id) == folder_files(output)
    assert {"submission.csv", "summary.json", "model.pth", "run.log"} <= set(folder_files(output))


def test_a_two_trial_search_logs_each_trial_in_the_searchs_group(ray_runtime, tiny_raw, data_dir, tmp_path, store):
    grid = [1.0, 1000.0]
    config = tmp_path / "ease.yaml"
    config.write_text(
        yaml.safe_dump({"model": "EASE", **TINY, "tune": {"search_space": {"reg_weight": {"grid": grid}}}})
    )
    output = tmp_path / "search"
    argv = ["--config", str(config), "--data", str(tiny_raw), "--output", str(output), f"data_dir={data_dir}"]
    assert tune_cli([*argv, "tracking.backend=mlflow", f"tracking.uri={store}", "tracking.project=search"]) == 0

    trials = pd.read_csv(output / "trials.csv").set_index("trial")
    client, runs = mlflow_runs(store, "search")
    assert sorted(runs) == sorted(trials.index)
    for trial, logged in runs.items():
        assert logged.info.status == "FINISHED"
        assert logged.data.tags == {**logged.data.tags, "kind": "trial", "group": "search"}
        assert float(logged.data.params["reg_weight"]) == trials.loc[trial, "reg_weight"]
        assert logged.data.metrics["holdout/recall_at_10"] == pytest.approx(trials.loc[trial, "recall@10"])
        history = client.get_metric_history(logged.info.run_id, "valid/recall_at_10")
        assert [m.value for m in history] == pytest.approx([trials.loc[trial, "recall@10"]])  # EASE: one epoch
        files = folder_files(trials.loc[trial, "output"])
        assert artifact_names(client, logged.info.run_id) == files and "holdout_users.csv" in files
    assert sorted(float(r.data.params["reg_weight"]) for r in runs.values()) == grid


def test_a_two_member_blend_logs_its_runs_and_itself(ray_runtime, tiny_raw, data_dir, tmp_path, store):
    from recbole_ext.blend.__main__ import main as blend_cli

    recipe = tmp_path / "recipe.yaml"
    members = {"EASE": {"model": "EASE"}, "BPR": {"model": "BPR", "set": {"epochs": 2, "embedding_size": 16}}}
    settings = {**TINY, "tracking": {"backend": "mlflow", "uri": store, "project": "blend"}}
    recipe.write_text(yaml.safe_dump({"members": members, "settings": settings}))
    output = tmp_path / "blend-out"
    argv = [str(recipe), "--data", str(tiny_raw), "--output", str(output), "--runs", str(tmp_path / "runs")]
    assert blend_cli([*argv, f"data_dir={data_dir}"]) == 0

    summary = json.loads((output / "summary.json").read_text())
    client, runs = mlflow_runs(store, "blend")
    blend = runs.pop("blend-out")
    assert blend.data.tags["kind"] == "blend" and blend.data.tags["group"] == "blend-out"
    assert blend.data.params["members.BPR.model"] == "BPR" and blend.data.params["method"] == "score"
    metrics = blend.data.metrics
    assert metrics["holdout/recall_at_10"] == summary["holdout"]["recall@10"]  # the cross-fitted estimate
    assert metrics["holdout_fitted/recall_at_10"] == summary["holdout_fitted"]["recall@10"]
    low, high = summary["holdout_detail"]["interval"]["recall@10"]
    assert (metrics["holdout/recall_at_10_low"], metrics["holdout/recall_at_10_high"]) == (low, high)
    assert {f"weight/{name}" for name in members} <= set(metrics)
    # the blend's own files, not its members' (members/ links to their run folders)
    assert artifact_names(client, blend.info.run_id) == [
        "holdout_users.csv",
        "report.txt",
        "submission.csv",
        "summary.json",
    ]

    assert {r.data.params["model"] for r in runs.values()} == {"EASE", "BPR"}
    for member in summary["members"]:
        logged = next(r for r in runs.values() if r.data.params["model"] == member["model"])
        assert logged.data.tags["kind"] == "run" and logged.data.tags["group"] == "blend-out"
        assert logged.data.metrics["holdout/recall_at_10"] == pytest.approx(member["holdout"]["recall@10"])
        assert "submission.csv" in artifact_names(client, logged.info.run_id)


def wandb_records(run_dir):
    """The records of an offline W&B run file (a LevelDB-style log of protobuf records after a 7-byte header)."""
    data = next(Path(run_dir).glob("run-*.wandb")).read_bytes()
    block, position, payload, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a record header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if position + 7 + length > len(data):  # a record W&B is still writing
            break
        payload += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last part of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            records.append(record)
            payload = b""
    return records


def test_wandb_offline_writes_its_run_folder(tiny_raw, data_dir, tmp_path, monkeypatch):
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    output = tmp_path / "bpr"
    tracking = ["tracking.backend=wandb", f"tracking.dir={tmp_path / 'wb'}", "tracking.group=g1"]
    summary = run(tiny_settings("BPR", tiny_raw, data_dir, output, BPR + tracking))

    (run_dir,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    # W&B's service writes the run's records on its own: its last one, exit, may come after run() returned
    records = wait_for(lambda: (found := wandb_records(run_dir)) and found[-1].HasField("exit") and found, timeout=60)
    started = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (started.project, started.run_group, started.job_type, started.display_name) == (
        "movierec",
        "g1",
        "run",
        "bpr",
    )
    config = {item.key: json.loads(item.value_json) for item in started.config.update}
    assert config["model"] == "BPR" and config["epochs"] == 3 and config["holdout.random"] == 3
    steps = [
        {item.nested_key[0]: json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert [(s["_step"], s["valid/recall_at_10"]) for s in steps] == [
        (r["epoch"], r["recall@10"]) for r in summary["valid_history"]
    ]
    final = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            final |= {(item.key or item.nested_key[0]): json.loads(item.value_json) for item in record.summary.update}
    holdout = pd.read_csv(summary["data"]["holdout_path"])
    by_hand = recall_at_10_by_hand(pd.read_csv(output / "valid_top50.csv"), holdout)
    assert final["holdout/recall_at_10"] == pytest.approx(by_hand, abs=1e-12)
    for name in folder_files(output):  # the run folder's files, among W&B's own (requirements.txt...)
        assert (run_dir / "files" / name).read_bytes() == (output / name).read_bytes(), name


def test_a_missing_tracking_package_is_refused_with_its_install_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as where mlflow is not installed
    with pytest.raises(ConfigError) as error:
        load_settings("EASE", overrides=["tracking.backend=mlflow"])
    assert str(error.value) == (
        "command line: tracking.backend mlflow needs the package 'mlflow', which is not installed: "
        "pip install mlflow-skinny"
    )
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert run_cli(["--model=EASE", f"--output={tmp_path / 'run'}", "tracking.backend=wandb"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: command line: tracking.backend wandb needs the package 'wandb', which is not installed: pip install wandb"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "override, message",
    [
        ("tracking.backend=mlfow", "command line: tracking.backend must be none, mlflow or wandb, got 'mlfow'"),
        (
            "tracking.projct=x",
            "command line: unknown setting 'tracking.projct'; known: backend, project, group, uri, dir; "
            "did you mean 'project'?",
        ),
        ("tracking.project=a/b", "command line: tracking.project must be a name of letters, digits, _ . -, got 'a/b'"),
        ("log_wandb=true", "command line: 'log_wandb' is managed by movierec: set `tracking: {backend: wandb"),
    ],
)
def test_a_bad_tracking_setting_names_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_settings("EASE", overrides=[override])
    assert str(error.value).startswith(message)


def test_an_mlflow_store_that_cannot_be_used_is_refused_before_any_work(tiny_raw, data_dir, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}"
    settings = tiny_settings(
        "EASE", tiny_raw, data_dir, tmp_path / "run", ["tracking.backend=mlflow", f"tracking.uri={uri}"]
    )
    with pytest.raises(ConfigError, match=rf"^command line: tracking: MLflow cannot log to {uri}: "):
        run(settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_wandb_without_a_login_is_refused_before_any_work(tiny_raw, data_dir, tmp_path, monkeypatch):
    wandb.teardown()  # W&B keeps its settings in the process (an offline test before): start as a new command does
    for variable in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    for variable in ("HOME", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):  # no key saved anywhere
        monkeypatch.setenv(variable, str(tmp_path / "home"))
    output = tmp_path / "run"
    settings = tiny_settings("EASE", tiny_raw, data_dir, output, ["tracking.backend=wandb", f"tracking.dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"^command line: tracking: W&B cannot log: .*WANDB_MODE=offline"):
        run(settings)  # pytest's standard input is no terminal: W&B cannot ask for a key
    assert not output.exists() and not (tmp_path / "wandb").exists()


@pytest.mark.parametrize(
    "uri, reason",
    [
        ("http://127.0.0.1:1", r"nothing answers at 127\.0\.0\.1:1 within 10 s \(Connection refused\)"),
        ("sqlite://", "is a database in memory, which keeps nothing"),
    ],
)
def test_an_mlflow_server_that_does_not_answer_or_a_store_in_memory_is_refused_at_once(
    uri, reason, tiny_raw, data_dir, tmp_path
):
    settings = tiny_settings(
        "EASE", tiny_raw, data_dir, tmp_path / "run", ["tracking.backend=mlflow", f"tracking.uri={uri}"]
    )
    with pytest.raises(ConfigError, match=rf"^command line: tracking: MLflow.* {reason}"):
        run(settings)
    assert list(tmp_path.iterdir()) == []


def test_wandb_with_a_server_that_does_not_answer_or_a_file_as_its_folder_is_refused(
    tiny_raw, data_dir, tmp_path, monkeypatch
):
    wandb.teardown()
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:1")
    output = tmp_path / "run"
    settings = tiny_settings("EASE", tiny_raw, data_dir, output, ["tracking.backend=wandb", f"tracking.dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"^command line: tracking: W&B cannot log to http://127\.0\.0\.1:1 "):
        run(settings)
    (tmp_path / "file").write_text("")
    settings = tiny_settings(
        "EASE", tiny_raw, data_dir, output, ["tracking.backend=wandb", f"tracking.dir={tmp_path / 'file'}"]
    )
    with pytest.raises(ConfigError, match=rf"^command line: tracking.dir: {tmp_path / 'file'} is a file"):
        run(settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
