"""run.py end to end on small generated data, with tiny models."""

import errno
import json
import math
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import interrupt_when, write_raw
from recbole.data.dataset import Dataset
from torch.optim.optimizer import register_optimizer_step_post_hook

from recbole_ext import ConfigError
from recbole_ext.config.settings import load_settings
from recbole_ext.quick_start.pipeline import predict_only, run
from recbole_ext.utils.files import HOST, json_text, staging_path, write_atomic
from run import main as run_cli

TINY_MODELS = {
    "EASE": [],
    "BPR": ["epochs=3", "embedding_size=16"],
    "MultiVAE": ["epochs=3", "mlp_hidden_size=[32]", "latent_dimension=16", "train_batch_size=64"],
    "LightGCN": ["epochs=2", "embedding_size=16"],
    "SASRec": ["epochs=2", "MAX_ITEM_LIST_LENGTH=10", "hidden_size=16", "inner_size=32", "n_layers=1"],
    "GRU4Rec": ["epochs=2", "MAX_ITEM_LIST_LENGTH=10", "embedding_size=16", "hidden_size=16"],
    "BERT4Rec": ["epochs=2", "MAX_ITEM_LIST_LENGTH=10", "hidden_size=16", "inner_size=32", "n_layers=1"],
    "SRGNN": ["epochs=1", "MAX_ITEM_LIST_LENGTH=10", "embedding_size=16"],
    # RecBole's prefix-trained originals
    "RecBoleSASRec": ["epochs=1", "MAX_ITEM_LIST_LENGTH=10", "hidden_size=16", "inner_size=32", "n_layers=1"],
    "RecBoleBERT4Rec": ["epochs=1", "MAX_ITEM_LIST_LENGTH=10", "hidden_size=16", "inner_size=32", "n_layers=1"],
}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data_dir")  # shared: prepared files and dataset caches


def tiny_settings(model, tiny_raw, data_dir, output, extra=()):
    common = [
        f"data={tiny_raw}",
        f"data_dir={data_dir}",
        f"output_dir={output}",
        "show_progress=false",
        "state=WARNING",
        "holdout.min_train=8",
        "holdout.random=3",
        "train_batch_size=256",
        "min_epoch_steps=1",  # the tiny models' epochs: one pass (test_an_epoch_of_a_small_data_set... sets its own)
    ]
    return load_settings(model, overrides=common + list(TINY_MODELS.get(model, [])) + list(extra))


def read_outputs(output):
    return (
        pd.read_csv(output / "submission.csv"),
        pd.read_csv(output / "valid_top50.csv"),
        json.loads((output / "summary.json").read_text()),
    )


def recall_at_10_by_hand(valid_top, holdout):
    """The competition metric, written out plainly: the reference for the pipeline's number."""
    ranked = {}
    for user, item in zip(valid_top["user"], valid_top["item"]):  # the file is in rank order per user
        ranked.setdefault(user, []).append(item)
    hidden = holdout.groupby("user")["item"].apply(set)
    values = []
    for user, items in hidden.items():
        top10 = ranked.get(user, [])[:10]
        values.append(len(set(top10) & items) / min(10, len(items)))
    return sum(values) / len(values)


def check_submission(submission, raw):
    ratings = pd.read_csv(raw / "train_ratings.csv")
    assert list(submission.columns) == ["user", "item"]
    per_user = submission.groupby("user").size()
    assert set(per_user.index) == set(ratings["user"]) and (per_user == 10).all()
    assert not submission.duplicated().any()
    assert set(submission["item"]) <= set(ratings["item"])  # original ids
    seen = submission.merge(ratings, on=["user", "item"])
    assert seen.empty, f"recommended items the user has seen: {seen.head()}"


@pytest.mark.parametrize("model", list(TINY_MODELS))
def test_run_writes_a_valid_submission_and_an_honest_score(model, tiny_raw, data_dir, tmp_path):
    output = tmp_path / model
    summary = run(tiny_settings(model, tiny_raw, data_dir, output))
    submission, valid_top, written = read_outputs(output)
    check_submission(submission, tiny_raw)
    holdout = pd.read_csv(written["data"]["holdout_path"])
    assert written["holdout"]["recall@10"] == pytest.approx(recall_at_10_by_hand(valid_top, holdout), abs=1e-12)
    assert summary["holdout"] == written["holdout"]
    assert valid_top.groupby("user").size().eq(50).all()
    full_top = pd.read_csv(output / "full_top50.csv")
    assert full_top.groupby("user").size().eq(50).all()
    assert written["best_epoch"] is not None and written["refit_epochs"] == written["best_epoch"] + 1
    best = max(written["valid_history"], key=lambda r: (r["recall@10"], r["epoch"]))  # ties: the later epoch
    assert written["best_epoch"] == best["epoch"] and written["holdout"]["recall@10"] == best["recall@10"]
    assert set(written["timings"]) >= {"prepare", "valid_train", "valid_predict", "full_train", "full_predict"}
    assert (output / "model.pth").is_file() and not (output / "checkpoints").exists()


def test_ease_beats_popularity_by_far(tiny_raw, data_dir, tmp_path):
    ease = run(tiny_settings("EASE", tiny_raw, data_dir, tmp_path / "ease"))
    pop = run(tiny_settings("Pop", tiny_raw, data_dir, tmp_path / "pop"))
    # 1.97x here: Pop ranks by its true training counts since compat's Pop shim (it had tied popular items
    # and scored about half as well), so the margin asked for is 1.5x, not the 2x of before the fix
    assert ease["holdout"]["recall@10"] > 1.5 * pop["holdout"]["recall@10"]


def test_predict_only_reproduces_the_submission(tiny_raw, data_dir, tmp_path):
    output = tmp_path / "sasrec"
    run(tiny_settings("SASRec", tiny_raw, data_dir, output))
    again = predict_only(output / "model.pth", tmp_path / "again", "cpu")
    assert pd.read_csv(again / "submission.csv").equals(pd.read_csv(output / "submission.csv"))
    full = pd.read_csv(output / "full_top50.csv")
    assert pd.read_csv(again / "full_top50.csv")[["user", "item"]].equals(full[["user", "item"]])


def test_without_refit_the_submission_masks_the_whole_history(tiny_raw, data_dir, tmp_path, caplog):
    output = tmp_path / "norefit"
    summary = run(tiny_settings("BPR", tiny_raw, data_dir, output, ["refit=false"]))
    assert summary["refit_epochs"] is None
    counts = summary["data"]["counts"]
    assert (
        f"refit: false: the submission comes from the validation fit, which never saw the "
        f"{counts['holdout_interactions']} holdout interactions"
    ) in caplog.text
    check_submission(pd.read_csv(output / "submission.csv"), tiny_raw)  # holdout items count as seen


def test_a_failed_run_leaves_no_output_but_its_log(tiny_raw, data_dir, tmp_path):
    output = tmp_path / "diverged"
    settings = tiny_settings("BPR", tiny_raw, data_dir, output, ["learning_rate=1e30", "epochs=5"])
    with pytest.raises(ValueError, match="nan"):
        run(settings)
    assert not output.exists()
    failed = tmp_path / "diverged.failed"
    assert sorted(p.name for p in failed.iterdir()) == ["error.txt", "run.log"]
    assert "Training loss is nan" in (failed / "error.txt").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_reports_user_errors_in_one_line(capsys, tmp_path):
    assert run_cli(["--model=SASRek"]) == 2
    assert run_cli(["--model=BPR", f"--output={tmp_path}"]) == 2  # exists already
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "error: unknown model 'SASRek'; did you mean 'SASRec'?",
        f"error: output folder {tmp_path} already exists; choose another --output",
    ]


def test_validate_only_stops_after_the_holdout_score(tiny_raw, data_dir, tmp_path):
    output = tmp_path / "trial"
    summary = run(tiny_settings("BPR", tiny_raw, data_dir, output), validate_only=True)
    # holdout_users.csv: the per-user scores tune.py's honest estimate reads
    assert sorted(p.name for p in output.iterdir() if p.is_file()) == ["holdout_users.csv", "run.log", "summary.json"]
    assert summary["refit_epochs"] is None and "full_train" not in summary["timings"]
    # the best epoch's holdout scores, as a full run of the same settings reports them
    best = next(r for r in summary["valid_history"] if r["epoch"] == summary["best_epoch"])
    assert summary["holdout"] == {"recall@10": best["recall@10"], "ndcg@10": best["ndcg@10"]}
    full = run(tiny_settings("BPR", tiny_raw, data_dir, tmp_path / "full"))
    assert full["holdout"]["recall@10"] == pytest.approx(summary["holdout"]["recall@10"], abs=1e-12)
    # the scorer kept the best epoch's per-user scores: those of the full run's lists
    trial_users = pd.read_csv(output / "holdout_users.csv", index_col="user")
    assert trial_users.equals(pd.read_csv(tmp_path / "full" / "holdout_users.csv", index_col="user"))


@pytest.mark.parametrize("metric", ["recall@10 last", "recall@10 random"])
def test_early_stopping_on_a_part_keeps_that_parts_best_epoch(metric, tiny_raw, data_dir, tmp_path):
    extra = [f"valid_metric={metric}", "epochs=8", "stopping_step=8", "embedding_size=16"]
    summary = run(tiny_settings("BPR", tiny_raw, data_dir, tmp_path / "run", extra), validate_only=True)
    history = summary["valid_history"]
    by_part = [r[metric] for r in history]
    # the best is that part's (ties: the later evaluation, RecBole's rule), and the model kept is that epoch's
    best = max(range(len(history)), key=lambda i: (by_part[i], i))
    assert summary["best_epoch"] == history[best]["epoch"]
    part = metric.split(" ")[1]
    assert summary["holdout_detail"]["parts"][part]["recall@10"] == pytest.approx(by_part[best], abs=1e-12)
    assert summary["holdout"]["recall@10"] == pytest.approx(history[best]["recall@10"], abs=1e-12)


def test_early_stopping_on_the_calibrated_mix_uses_the_share_it_prints(
    tiny_raw, data_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # where the listing writes outputs/leaderboard.json
    (tmp_path / "outputs").mkdir()
    estimate = {"board": "public", "last_share": 0.3, "interval": [0.2, 0.4], "submissions": 4}
    (tmp_path / "outputs" / "leaderboard.json").write_text(json.dumps({"calibration": estimate}))
    extra = ["valid_metric=recall@10 calibrated", "epochs=8", "stopping_step=8", "embedding_size=16"]
    settings = tiny_settings("BPR", tiny_raw, data_dir, tmp_path / "run", extra)
    assert "recall@10 calibrated: the last part's share 0.3 (95% interval 0.20 to 0.40" in capsys.readouterr().err
    summary = run(settings, validate_only=True)
    history = summary["valid_history"]
    mixed = [r["recall@10 last:0.3"] for r in history]
    best = max(range(len(history)), key=lambda i: (mixed[i], i))  # RecBole's rule: ties to the later
    assert summary["best_epoch"] == history[best]["epoch"]
    assert len(set(mixed)) > 1  # the epochs differ: the choice is a real one
    # the printed share weighs each user's parts: 0.3 * last + 0.7 * random (a user with one part: that part)
    users = pd.read_csv(tmp_path / "run" / "holdout_users.csv", index_col="user")
    by_hand = (0.3 * users["recall@10 last"] + 0.7 * users["recall@10 random"]).fillna(users["recall@10 last"])
    assert mixed[best] == pytest.approx(by_hand.fillna(users["recall@10 random"]).mean(), abs=1e-6)  # csv: 8 digits


def test_early_stopping_on_a_part_the_holdout_leaves_empty_is_refused():
    with pytest.raises(ConfigError, match=r"^command line: valid_metric 'recall@10 last' follows the holdout's last "):
        load_settings("BPR", overrides=["valid_metric=recall@10 last", "holdout.last=0"])


@pytest.mark.parametrize(
    "model, extra, batches_per_pass",
    [
        ("SASRec", ["train_batch_size=64"], 2),  # 120 users, one random window each: 2 batches
        ("MultiVAE", ["train_batch_size=50"], 3),  # 120 users: 3 batches
    ],
)
@pytest.mark.parametrize("min_steps", [1, 5])
def test_an_epoch_of_a_small_data_set_makes_at_least_min_epoch_steps(
    model, extra, batches_per_pass, min_steps, tiny_raw, data_dir, tmp_path
):
    steps = []
    hook = register_optimizer_step_post_hook(lambda *args: steps.append(1))  # every optimizer of the run
    try:
        settings = tiny_settings(
            model, tiny_raw, data_dir, tmp_path / "run", [*extra, "epochs=2", f"min_epoch_steps={min_steps}"]
        )
        summary = run(settings, validate_only=True)
    finally:
        hook.remove()
    passes = -(-min_steps // batches_per_pass)  # whole passes over the data, as many as reach min_steps
    assert summary["epochs_run"] == 2
    assert len(steps) == 2 * passes * batches_per_pass >= 2 * min_steps


def test_the_holdout_breakdown_agrees_with_a_count_by_hand(tiny_raw, data_dir, tmp_path):
    output = tmp_path / "ease"
    run(tiny_settings("EASE", tiny_raw, data_dir, output, ["state=INFO"]))  # INFO: the scores in run.log
    _, valid_top, written = read_outputs(output)
    holdout = pd.read_csv(written["data"]["holdout_path"])
    detail = written["holdout_detail"]
    for part in ("last", "random"):
        hidden = holdout[holdout["part"] == part]
        assert detail["parts"][part]["users"] == hidden["user"].nunique()
        assert detail["parts"][part]["recall@10"] == pytest.approx(recall_at_10_by_hand(valid_top, hidden), abs=1e-12)

    # activity: each holdout user's interactions in the validation fit's file, counted here
    valid_inter = pd.read_csv(Path(written["data"]["data_path"]) / "movies-val" / "movies-val.inter", sep="\t")
    counted = valid_inter.groupby("user_id:token").size()
    users = pd.read_csv(output / "holdout_users.csv", index_col="user")
    assert sorted(users.index) == sorted(holdout["user"].unique())
    assert (users["train_interactions"] == counted.reindex(users.index)).all()
    groups = detail["activity"]
    assert list(groups) == ["light", "medium", "heavy"] and sum(g["users"] for g in groups.values()) == len(users)
    assert groups["light"]["train_interactions"][1] < groups["medium"]["train_interactions"][0]
    assert groups["medium"]["train_interactions"][1] < groups["heavy"]["train_interactions"][0]
    for name, group in groups.items():
        low, high = group["train_interactions"]
        members = users.index[(users["train_interactions"] >= low) & (users["train_interactions"] <= high)]
        assert group["users"] == len(members) and (users.loc[members, "activity"] == name).all()
        in_group = holdout[holdout["user"].isin(members)]
        assert group["recall@10"] == pytest.approx(recall_at_10_by_hand(valid_top, in_group), abs=1e-12)

    recall = written["holdout"]["recall@10"]
    assert users["recall@10"].mean() == pytest.approx(recall, abs=1e-6)
    low, high = detail["interval"]["recall@10"]
    assert low < recall < high and detail["interval"]["level"] == 0.95
    log = (output / "run.log").read_text()
    assert f"holdout recall@10 {recall:.4f} (95% interval {low:.4f} to {high:.4f})" in log
    assert "by part: last " in log and "by training interactions: light (" in log


def test_cli_takes_key_value_anywhere_and_model_names_in_any_case(tiny_raw, data_dir, tmp_path):
    output = tmp_path / "ease"
    argv = [
        "--model=ease",
        "reg_weight=100",
        "--output",
        str(output),
        f"data_dir={data_dir}",
        "--data",
        str(tiny_raw),
        "state=WARNING",
        "show_progress=false",
        "holdout.min_train=8",
        "holdout.random=3",
    ]
    assert run_cli(argv) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["model"] == "EASE" and summary["config"]["recbole"]["reg_weight"] == 100
    assert summary["data"]["data_path"].startswith(str(data_dir))


ROOT = Path(__file__).resolve().parent.parent


def test_a_holdout_that_scores_no_user_is_refused_and_writes_nothing(tiny_raw, data_dir, tmp_path, capsys):
    settings = tiny_settings("EASE", tiny_raw, data_dir, tmp_path / "run", ["holdout.min_train=1000"])
    with pytest.raises(
        ConfigError,
        match="^command line: holdout: no user can be scored: with last 2, random 3, "
        "max_fraction 0.25, min_train 1000 every user keeps all interactions",
    ):
        run(settings)
    assert list(tmp_path.iterdir()) == []
    argv = [
        "--model=EASE",
        f"--data={tiny_raw}",
        f"data_dir={data_dir}",
        "holdout.min_train=1000",
        f"--output={tmp_path / 'run'}",
        "state=WARNING",
    ]
    assert run_cli(argv) == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_summary_json_is_strict_json():
    text = json_text({"recall@10": math.nan, "history": [math.inf, 0.5]})
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON")) == {
        "recall@10": None,
        "history": [None, 0.5],
    }


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_missing_gpu_is_refused_before_anything_is_written(tiny_raw, data_dir, tmp_path):
    with pytest.raises(ConfigError, match="device: cuda was asked for but torch sees no GPU"):
        run(tiny_settings("EASE", tiny_raw, data_dir, tmp_path / "run", ["device=cuda"]))
    assert list(tmp_path.iterdir()) == []


def test_an_error_in_the_final_fit_keeps_the_finished_validation(tiny_raw, data_dir, tmp_path, capsys, monkeypatch):
    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("recbole_ext.quick_start.pipeline.write_full_lists", disk_full)  # the final fit's first write
    output = tmp_path / "ease"
    argv = [
        "--model=EASE",
        f"--data={tiny_raw}",
        f"--output={output}",
        f"data_dir={data_dir}",
        "state=WARNING",
        "show_progress=false",
        "holdout.random=3",
        "holdout.min_train=8",
    ]
    assert run_cli(argv) == 1
    error = capsys.readouterr().err.strip().splitlines()
    failed = tmp_path / "ease.failed"
    line = "OSError: [Errno 28] No space left on device"
    assert error == [f"error: the run failed: {line} (its log and traceback: {failed})"]
    assert not output.exists()
    assert sorted(p.name for p in failed.iterdir()) == ["error.txt", "run.log", "summary.json", "valid_top50.csv"]
    summary = json.loads((failed / "summary.json").read_text())
    assert summary["error"] == line
    holdout = pd.read_csv(summary["data"]["holdout_path"])
    valid_top = pd.read_csv(failed / "valid_top50.csv")
    assert summary["holdout"]["recall@10"] == pytest.approx(recall_at_10_by_hand(valid_top, holdout), abs=1e-12)
    assert summary["refit_epochs"] is None and "full_dataset" not in summary["timings"]


def heavy_user_data(folder, seen):
    """60 items; user 1 has seen `seen` of them, users 2-31 about two thirds."""
    others = [
        (user, item, (item * 37 + user) % 61) for user in range(2, 32) for item in range(1, 61) if (item + user) % 3
    ]
    return write_raw(folder, [(1, item, item) for item in range(1, seen + 1)] + others)


def test_a_user_with_fewer_unseen_items_than_top_n_gets_them_all_with_one_warning(tmp_path, caplog):
    raw = heavy_user_data(tmp_path / "raw", seen=48)  # 12 unseen: fewer than top_n 20, enough for a submission
    output = tmp_path / "ease"
    overrides = [f"data={raw}", f"data_dir={tmp_path / 'data'}", f"output_dir={output}", "show_progress=false"]
    with caplog.at_level("WARNING"):
        run(load_settings("EASE", overrides=[*overrides, "top_n=20", "holdout.random=3", "holdout.min_train=8"]))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["top_n 20: user 1 has 12 unseen items of 60; their lists hold all their unseen items"]
    full = pd.read_csv(output / "full_top50.csv")
    assert sorted(full[full.user == 1].item) == list(range(49, 61))  # every item user 1 has not seen
    assert full[full.user != 1].groupby("user").size().eq(20).all()
    check_submission(pd.read_csv(output / "submission.csv"), raw)
    valid = pd.read_csv(output / "valid_top50.csv")  # the holdout's items are unseen in the validation fit
    held = pd.read_csv(json.loads((output / "summary.json").read_text())["data"]["holdout_path"])
    assert len(valid[valid.user == 1]) == min(20, 12 + (held.user == 1).sum())


def test_a_user_with_fewer_unseen_items_than_a_submission_lists_is_refused_before_training(tmp_path, capsys):
    raw = heavy_user_data(tmp_path / "raw", seen=55)
    argv = ["--model=BPR", f"--data={raw}", f"--output={tmp_path / 'bpr'}", f"data_dir={tmp_path / 'data'}"]
    assert run_cli([*argv, "state=WARNING", "holdout.random=3", "holdout.min_train=8"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {raw / 'train_ratings.csv'}: user 1 has 5 unseen items of 60; a submission lists 10 unseen items "
        "for every user: leave such users out of the file"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "raw"]  # no run folder


def test_predict_only_on_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    assert run_cli(["--predict-only", str(tmp_path / "notes.pth")]) == 2
    assert run_cli(["--predict-only", str(tmp_path / "tensor.pth")]) == 2
    assert run_cli(["--predict-only", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {tmp_path / 'notes.pth'}: not a model.pth written by run.py (cannot be read: UnpicklingError)",
        f"error: {tmp_path / 'tensor.pth'}: not a model.pth written by run.py (no run settings inside)",
        f"error: {tmp_path}: is a folder, expected a model.pth written by run.py",
    ]


def test_the_next_run_removes_what_dead_processes_left_half_written(tiny_raw, data_dir, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        leftovers = [staging_path(tmp_path / "EASE-old", dead.pid), staging_path(tmp_path / "trials.csv", dead.pid)]
        in_progress = staging_path(tmp_path / "EASE-other", alive.pid)
        for path in [*leftovers, in_progress]:
            (path / "checkpoints").mkdir(parents=True)
        run(tiny_settings("EASE", tiny_raw, data_dir, tmp_path / "EASE-new"))
        assert not any(path.exists() for path in leftovers)
        assert in_progress.is_dir()
    finally:
        alive.kill()
        alive.wait()


def test_an_atomic_write_removes_what_dead_processes_left_beside_it(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = tmp_path / (staging_path(tmp_path / "movies-val.pth", dead.pid).name + ".pth")
    leftover.write_bytes(b"half a dataset")
    write_atomic(tmp_path / "notes.txt", lambda path: path.write_text("complete"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def endless_run(tiny_raw, data_dir, output):
    """run.py training BPR until it is stopped, started as a shell starts a background job
    (`nohup run.py ... &`): with SIGINT ignored."""
    argv = [
        sys.executable,
        "run.py",
        "--model=BPR",
        f"--data={tiny_raw}",
        f"--output={output}",
        f"data_dir={data_dir}",
        "epochs=100000",
        "stopping_step=100000",
        "embedding_size=16",
        "state=INFO",
        "show_progress=false",
        "holdout.min_train=8",
        "holdout.random=3",
        "train_batch_size=256",
    ]
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )


@pytest.mark.parametrize("sent, name", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_an_interrupted_run_says_so_in_one_line_and_keeps_its_log(sent, name, tiny_raw, data_dir, tmp_path):
    process = endless_run(tiny_raw, data_dir, tmp_path / "bpr")
    stderr = interrupt_when(process, lambda: "epoch 1 training" in read_log(tmp_path), sent)
    interrupted = tmp_path / "bpr.interrupted"
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == f"interrupted ({name}): what was finished is in {interrupted}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bpr.interrupted"]  # no staging folder left
    assert [p.name for p in interrupted.iterdir()] == ["run.log"]


def read_log(folder):
    logs = list(folder.glob(".*.partial-*/run.log"))
    return logs[0].read_text() if logs else ""


def test_a_second_job_writing_the_same_output_is_refused_in_one_line(tiny_raw, data_dir, tmp_path, capsys):
    output = tmp_path / "run"
    first = endless_run(tiny_raw, data_dir, output)
    second = [f"--data={tiny_raw}", f"--output={output}", f"data_dir={data_dir}", "holdout.min_train=8"]

    def second_refused():
        if "epoch 1 training" not in read_log(tmp_path):
            return False
        assert run_cli(["--model=EASE", "holdout.random=3", "state=WARNING", *second]) == 2
        return True

    stderr = interrupt_when(first, second_refused, signal.SIGTERM)
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: output folder {output} is being written by process {first.pid} on {HOST}; choose another --output"
    ]
    assert first.returncode == 130, stderr  # the first job's work is kept as it would be without the second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.interrupted"]  # nor claim nor staging left


def test_a_cache_file_cut_short_is_named_and_built_again(tiny_raw, tmp_path, caplog):
    run(tiny_settings("EASE", tiny_raw, tmp_path / "data", tmp_path / "first"))
    [cache] = (tmp_path / "data").glob("prepared/*/cache/*-val-*.pth")  # the validation fit's dataset
    cache.write_bytes(cache.read_bytes()[:1000])  # a full disk, or a job killed by a quota
    run(tiny_settings("EASE", tiny_raw, tmp_path / "data", tmp_path / "second"))
    assert [r.message for r in caplog.records if r.levelname == "WARNING"] == [
        f"{cache}: a cache file that cannot be read (UnpicklingError: pickle data was truncated): removed, built again"
    ]
    assert isinstance(pickle.loads(cache.read_bytes()), Dataset)  # whole again


FILE_SIZE_LIMITED_RUN = """
import resource, signal, sys
import run
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
sys.exit(run.main(sys.argv[2:]))
"""


def test_a_run_whose_files_cannot_be_written_whole_says_why(tiny_raw, data_dir, tmp_path):
    model = ["--model=MultiVAE", "epochs=1", "mlp_hidden_size=[600]", "latent_dimension=16"]
    common = [f"--data={tiny_raw}", f"data_dir={data_dir}", "state=WARNING", "holdout.min_train=8", "holdout.random=3"]
    output = tmp_path / "limited"
    # a file of 300 kB at most: the model file (MultiVAE with 600 hidden units) cannot be written whole
    argv = [sys.executable, "-c", FILE_SIZE_LIMITED_RUN, "300000", *model, *common, f"--output={output}"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: the run failed: ") and line.endswith(
        "(a file could not be written whole: the disk is full, or a quota or file size limit was reached) "
        f"(its log and traceback: {output}.failed)"
    ), line
