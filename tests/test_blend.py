"""Blend recipes on tiny data with a real local Ray: bad recipes stop before Ray starts, members train
side by side, a second invocation trains nothing, a changed member retrains alone, a failing member is
left out with a warning, and the blend's numbers are recbole_ext.blend.ensemble's on the same runs."""

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from conftest import interrupt_when, write_raw

import yaml
from recbole_ext import ConfigError
from recbole_ext.blend import ensemble
from recbole_ext.blend.__main__ import main as blend_main
from recbole_ext.blend.recipe import member_settings, read_recipe
from recbole_ext.tune.driver import start_ray

ROOT = Path(__file__).resolve().parent.parent
TINY = {
    "show_progress": False,
    "state": "WARNING",
    "train_batch_size": 256,
    "holdout": {"min_train": 8, "random": 3},
    "tune": {"resources_per_trial": {"cpu": 0.5}},
}  # four runs at once on two CPUs
MEMBERS = {
    "EASE": {"model": "EASE", "set": {"reg_weight": 10.0}},
    "MultiVAE": {
        "model": "MultiVAE",
        "set": {"epochs": 3, "mlp_hidden_size": [32], "latent_dimension": 16, "train_batch_size": 32},
    },
    "BPR": {"model": "BPR", "set": {"epochs": 3, "embedding_size": 16}, "seeds": [1, 2]},
}
BLEND = {"method": "score", "weights": "auto", "seed": 0}


def write_recipe(path, members=None, **sections):
    recipe = {"members": members or MEMBERS, "blend": BLEND, "settings": TINY, **sections}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("blend_data")


def cli(recipe, tiny_raw, data_dir, output, runs, *extra):
    return blend_main(
        [
            str(recipe),
            "--data",
            str(tiny_raw),
            "--output",
            str(output),
            "--runs",
            str(runs),
            f"data_dir={data_dir}",
            *extra,
        ]
    )


def read_summary(folder):
    return json.loads((Path(folder) / "summary.json").read_text())


def runs_by_member(summary):
    return {(m["name"], run["seed"]): run for m in summary["blend"]["members"] for run in m["runs"]}


# ---------------------------------------------------------------------------
# a bad recipe stops in one line, before Ray starts and before anything is written


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda r: r.update(memebrs=r.pop("members")),
            "memebrs: unknown key; known: members, blend, settings, quick; did you mean 'members'?",
        ),
        (
            lambda r: r["members"]["BPR"].update(seed=[1]),
            "members.BPR.seed: unknown key; known: config, model, set, seeds; did you mean 'seeds'?",
        ),
        (lambda r: r["members"]["BPR"].update(seeds=[1, 1]), "members.BPR.seeds must be a list of distinct integers"),
        (lambda r: r["members"]["BPR"].update(seeds=3), "members.BPR.seeds must be a list of distinct integers"),
        (
            lambda r: r["members"]["BPR"]["set"].update(epochs=-3),
            "members.BPR.set: epochs must be an integer >= 1, got -3",
        ),
        (
            lambda r: r["members"]["EASE"]["set"].update(reg_wieght=1.0),
            "members.EASE.set: unknown setting 'reg_wieght' for EASE; did you mean 'reg_weight'?",
        ),
        (
            lambda r: r["members"]["EASE"].update(config="nowhere.yaml"),
            "members.EASE.config: nowhere.yaml: config file not found",
        ),
        (lambda r: r["members"].update(Broken={"model": "SASRek"}), "members.Broken: unknown model 'SASRek'"),
        (lambda r: r["members"].pop("BPR") and r["members"].pop("MultiVAE"), "members must map at least two member"),
        (
            lambda r: r["blend"].update(method="mean"),
            "blend.method must be one of priority, rank, score, stack, auto, got 'mean'",
        ),
        (
            lambda r: r["blend"].update(method="stack", stack={"features": ["members", "genere"]}),
            "blend.stack.features: unknown feature 'genere'; known: members, agreement",
        ),
        (
            lambda r: r["blend"].update(method="stack", stack={"candidates": 5}),
            "blend.stack.candidates must be an integer >= 10, got 5",
        ),
        (
            lambda r: r["blend"].update(method="stack", stack={"bags": 0}),
            "blend.stack.bags must be an integer >= 1, got 0",
        ),
        (lambda r: r["blend"].update(stack={"depth": 5}), "blend.stack.depth: unknown key; known: candidates"),
        (
            lambda r: r["blend"].update(method="auto", weights=[1, 2, 3]),
            "blend.weights must be auto with method auto",
        ),
        (lambda r: r["blend"].update(weights=[1, 2]), "blend.weights must be auto or a list of 3 numbers"),
        (
            lambda r: r["blend"].update(objective="recall@10 last:2"),
            "blend.objective must be recall@10 or ndcg@10, of all users, of one holdout part",
        ),
        (lambda r: r["settings"].update(holdout={"min_train": 0}), "settings: holdout"),
        (
            lambda r: r["settings"]["tune"].update(resources_per_trial={"gpus": 1}),
            "members.EASE: tune.resources_per_trial: unknown resource 'gpus'",
        ),
        (lambda r: r["quick"]["members"].update(EASE={"sett": {}}), "quick.members.EASE.sett: unknown key"),
        (lambda r: r["quick"].update(settings=[1]), "quick.settings: expected `key: value` entries"),
        (
            lambda r: r.update(settings=[1], quick={"settings": {"epochs": 1}}),
            ": settings: expected `key: value` entries",
        ),
        (
            lambda r: r["members"]["EASE"]["set"].update({"holdout.seed": 3}),
            "the members would train on different prepared data",
        ),
        pytest.param(
            lambda r: r["members"].update(Seq={"model": "SASRec", "set": {"amp": "fp16"}}),
            "recipe.yaml: members.Seq.set: amp: fp16 is for GPUs without bfloat16",
            marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU"),
        ),
    ],
)
def test_a_bad_recipe_stops_in_one_line_naming_the_file_and_the_key(
    change, expected, tmp_path, tiny_raw, data_dir, capsys
):
    recipe = json.loads(json.dumps({"members": MEMBERS, "blend": BLEND, "settings": TINY, "quick": {"members": {}}}))
    change(recipe)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert cli(path, tiny_raw, data_dir, tmp_path / "out", tmp_path / "runs", "--quick") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}") and len(err.splitlines()) == 1, err
    assert expected in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
    assert not ray.is_initialized()


def test_a_bad_member_yaml_is_named_with_its_member(tmp_path, tiny_raw, data_dir, capsys):
    member_yaml = tmp_path / "my_ease.yaml"
    member_yaml.write_text("model: EASE\nlerning_rate: 0.1\n")
    path = write_recipe(tmp_path / "recipe.yaml", {**MEMBERS, "EASE": {"config": str(member_yaml)}})
    assert cli(path, tiny_raw, data_dir, tmp_path / "out", tmp_path / "runs") == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {path}: members.EASE: {member_yaml}: unknown setting 'lerning_rate' for EASE; "
        f"did you mean 'learning_rate'?"
    )
    assert not ray.is_initialized()


def test_a_member_setting_the_data_cannot_serve_is_named_with_its_member(tmp_path):
    raw = write_raw(tmp_path / "raw", [(1, 1, 1), (1, 2, 2)])  # no years.tsv, no titles.tsv
    path = write_recipe(
        tmp_path / "recipe.yaml", {**MEMBERS, "EASE": {"model": "EASE", "set": {"filter": {"future_items": 2}}}}
    )
    recipe = read_recipe(path)
    with pytest.raises(ConfigError) as refused:
        member_settings(recipe, recipe.members[0], [f"data={raw}"])
    assert str(refused.value).startswith(f"{path}: members.EASE.set: filter.future_items needs the films' years: ")


def test_the_shipped_recipe_and_its_quick_variant_are_valid(tiny_raw, monkeypatch):
    monkeypatch.chdir(ROOT)  # its paths are the project's
    path = Path("yaml/blends/leaderboard.yaml")
    full, quick = read_recipe(path), read_recipe(path, quick=True)
    assert [spec.name for spec in full.members] == ["EASE", "RecVAE", "MultiVAE", "SLIMElastic", "BERT4Rec", "gSASRec"]
    slim_alpha = {}
    for recipe, resources in ((full, {"cpu": 2, "gpu": 0.25}), (quick, {"cpu": 1, "gpu": 0})):
        settings = {spec.name: member_settings(recipe, spec, [f"data={tiny_raw}"]) for spec in recipe.members}
        slim = settings.pop("SLIMElastic")
        assert slim["tune"]["resources_per_trial"] == {"cpu": 1, "gpu": 0}  # scikit-learn: no GPU share
        slim_alpha[recipe.quick] = slim["alpha"]
        assert all(s["tune"]["resources_per_trial"] == resources for s in settings.values())
    # scikit-learn's penalties grow with the users: the competition's 31,360 need a far smaller alpha than --quick's
    assert slim_alpha[True] == 0.2 and 31_360 * slim_alpha[False] < 200
    gsasrec = settings["gSASRec"]  # the quick one: its yaml's quick: block, then the recipe's changes
    assert (gsasrec["loss_type"], gsasrec["MAX_ITEM_LIST_LENGTH"]) == ("gBCE", 50)
    assert (gsasrec["valid_metric"], gsasrec["epochs"], gsasrec["stopping_step"]) == ("recall@10 last", 40, 10)


# ---------------------------------------------------------------------------
# SIGTERM (`timeout`, job schedulers) stops a blend as Ctrl-C does


@pytest.mark.parametrize("signum, name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")])
def test_sigterm_or_ctrl_c_stops_a_blend_in_one_line_and_writes_no_output(signum, name, tmp_path, tiny_raw, data_dir):
    endless = {"model": "BPR", "set": {"epochs": 100000, "stopping_step": 100000, "embedding_size": 16}}
    recipe = write_recipe(tmp_path / "recipe.yaml", {"EASE": MEMBERS["EASE"], "Endless": endless})
    runs = tmp_path / "runs"
    argv = [
        sys.executable,
        "-m",
        "recbole_ext.blend",
        str(recipe),
        "--data",
        str(tiny_raw),
        "--output",
        str(tmp_path / "out"),
        "--runs",
        str(runs),
        f"data_dir={data_dir}",
    ]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = interrupt_when(process, lambda: list(runs.glob(".Endless-*.partial-*")), signum)  # once it trains
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted ({name}): finished runs are kept and reused by the same command"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml", "runs"]  # no output, no staging folder
    (interrupted,) = runs.glob("Endless-*.interrupted")  # the run cut short keeps its log, as run.py's do
    assert (interrupted / "run.log").is_file() and not list(runs.glob(".*.partial-*"))


def test_a_blend_on_a_ray_cluster_with_address(tmp_path, tiny_raw, data_dir, ray_cluster):
    """Run from another folder with relative paths: the members train in the cluster's workers."""
    members = {"EASE": MEMBERS["EASE"], "BPR": {"model": "BPR", "set": {"epochs": 1, "embedding_size": 16}}}
    write_recipe(tmp_path / "recipe.yaml", members)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recbole_ext.blend",
            "recipe.yaml",
            "--data",
            str(tiny_raw),
            "--output",
            "out",
            "--runs",
            "runs",
            f"data_dir={data_dir}",
            "--address",
            ray_cluster.address,
        ],
        cwd=tmp_path,
        env={**ray_cluster.env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = runs_by_member(read_summary(tmp_path / "out"))
    assert {run["status"] for run in runs.values()} == {"trained"}
    for run in runs.values():
        assert Path(run["path"]).is_relative_to(tmp_path / "runs")
        assert ray_cluster.ran_in_worker(run["worker"].split(" pid ")[1])


# ---------------------------------------------------------------------------
# blends on a real local Ray runtime


@pytest.fixture(scope="module")
def ray_runtime():
    assert start_ray()  # a fresh local runtime, shared by this module's blends
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def first_blend(ray_runtime, tmp_path_factory, tiny_raw, data_dir):
    folder = tmp_path_factory.mktemp("blend")
    recipe = write_recipe(folder / "recipe.yaml")
    output, runs = folder / "out", folder / "runs"
    code = cli(recipe, tiny_raw, data_dir, output, runs)
    return code, recipe, output, runs, read_summary(output)


def test_members_train_side_by_side(first_blend):
    code, _, output, _, summary = first_blend
    assert code == 0
    runs = runs_by_member(summary)
    assert set(runs) == {("EASE", None), ("MultiVAE", None), ("BPR", 1), ("BPR", 2)}
    assert all(run["status"] == "trained" and run["resources"] == {"cpu": 0.5, "gpu": 0} for run in runs.values())
    # every run started before any run finished: all four trained at the same time
    assert max(run["started"] for run in runs.values()) < min(run["finished"] for run in runs.values())
    assert summary["blend"]["trained"] == 4 and summary["blend"]["reused"] == 0
    for name in ("EASE", "MultiVAE", "BPR"):
        assert (output / "members" / name).is_symlink() and (output / "members" / name / "summary.json").is_file()
    assert (output / "submission.csv").is_file() and "blend, cross-fitted" in (output / "report.txt").read_text()
    assert not list(output.parent.glob(".*partial*"))


def test_the_blend_is_the_ensemble_of_the_same_runs(first_blend, tmp_path):
    _, _, output, _, summary = first_blend
    folders = [output / "members" / name for name in ("EASE", "MultiVAE", "BPR")]
    reference = ensemble.build(folders, "score", "auto", 0, tmp_path / "ensemble")
    for key in ("holdout", "holdout_fitted", "holdout_detail", "weights", "vs_best_member", "cross_fit", "members"):
        assert summary[key] == json.loads(json.dumps(reference[key])), key
    assert (output / "submission.csv").read_bytes() == (tmp_path / "ensemble" / "submission.csv").read_bytes()
    assert (output / "holdout_users.csv").read_bytes() == (tmp_path / "ensemble" / "holdout_users.csv").read_bytes()


def test_a_member_with_seeds_averages_its_runs_scaled_scores(first_blend):
    _, _, output, _, summary = first_blend
    runs = runs_by_member(summary)
    seed_runs = [Path(runs[("BPR", seed)]["path"]) for seed in (1, 2)]
    assert [read_summary(p)["config"]["seed"] for p in seed_runs] == [1, 2]
    lists = [pd.read_csv(p / "valid_top50.csv") for p in seed_runs]
    assert not lists[0].equals(lists[1])  # two seeds, two models
    expected = {}
    for top in lists:  # by hand: the mean over runs of each user's min-max scaled scores, 0 where a run lacks it
        low, high = top.groupby("user")["score"].transform("min"), top.groupby("user")["score"].transform("max")
        for user, item, scaled in zip(top["user"], top["item"], (top["score"] - low) / (high - low)):
            expected[user, item] = expected.get((user, item), 0) + scaled / 2
    averaged = pd.read_csv(output / "members" / "BPR" / "valid_top50.csv")
    assert len(averaged) == len(lists[0])
    for user, rows in averaged.groupby("user"):
        best = sorted((v for (u, _), v in expected.items() if u == user), reverse=True)[: len(rows)]
        assert np.allclose(rows["score"], best)  # the 50 best averages, best first
        assert all(expected[user, item] == pytest.approx(score) for item, score in zip(rows["item"], rows["score"]))


def test_a_second_invocation_trains_nothing_and_writes_the_same_submission(first_blend, tiny_raw, data_dir):
    _, recipe, output, runs, first = first_blend
    submission = (output / "submission.csv").read_bytes()
    kept = {p: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")}
    assert cli(recipe, tiny_raw, data_dir, output, runs) == 0
    again = read_summary(output)
    assert again["blend"]["trained"] == 0 and again["blend"]["reused"] == 4
    assert (output / "submission.csv").read_bytes() == submission
    assert again["holdout"] == first["holdout"]
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")} == kept  # nothing rewritten


def test_a_recipe_with_the_stage_reuses_the_runs_and_writes_the_same_blend_twice(
    first_blend, tiny_raw, data_dir, tmp_path
):
    _, _, _, runs, _ = first_blend
    recipe = write_recipe(
        tmp_path / "recipe.yaml", blend={**BLEND, "method": "stack", "stack": {"folds": 3, "bags": 2}}
    )
    outputs = [tmp_path / "first", tmp_path / "second"]
    for output in outputs:
        assert cli(recipe, tiny_raw, data_dir, output, runs) == 0
    first, second = (read_summary(output) for output in outputs)
    assert first["blend"]["trained"] == 0 and first["blend"]["reused"] == 4  # the score blend's member runs
    folds = first["cross_fit"]["folds"]  # 3 folds in each of 2 bags
    assert first["method"] == "stack" and [fold["bag"] for fold in folds] == [0, 0, 0, 1, 1, 1]
    assert first["holdout"] == second["holdout"] and first["stack"] == second["stack"]
    assert (outputs[0] / "submission.csv").read_bytes() == (outputs[1] / "submission.csv").read_bytes()
    assert "second stage, 2 LightGBM models averaged (" in (outputs[0] / "report.txt").read_text()


def test_a_blend_whose_folder_cannot_be_written_says_so_in_one_line_and_leaves_nothing(
    first_blend, tiny_raw, data_dir, tmp_path, capsys
):
    _, recipe, _, runs, _ = first_blend
    output = tmp_path / "out"
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, limits[1]))  # the members are reused: only the blend writes
    try:
        code = cli(recipe, tiny_raw, data_dir, output, runs)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if " INFO " not in line]  # INFO: its progress
    [line] = errors
    assert line.startswith("error: the blend failed: OSError: [Errno 27] File too large")
    assert "a file could not be written whole" in line and line.endswith("reused by the same command)")
    assert not output.exists() and not list(tmp_path.glob(".out*partial*"))


def test_a_changed_member_setting_retrains_only_that_member(first_blend, tiny_raw, data_dir, tmp_path):
    _, _, _, runs, first = first_blend
    members = json.loads(json.dumps(MEMBERS))
    members["EASE"]["set"]["reg_weight"] = 50.0
    recipe = write_recipe(tmp_path / "recipe.yaml", members)
    assert cli(recipe, tiny_raw, data_dir, tmp_path / "out", runs) == 0
    status = {key: run["status"] for key, run in runs_by_member(read_summary(tmp_path / "out")).items()}
    assert status == {
        ("EASE", None): "trained",
        ("MultiVAE", None): "reused",
        ("BPR", 1): "reused",
        ("BPR", 2): "reused",
    }
    ease = read_summary(tmp_path / "out" / "members" / "EASE")
    assert ease["config"]["reg_weight"] == 50.0


def test_a_failing_member_is_left_out_with_a_warning(first_blend, tiny_raw, data_dir, tmp_path, capsys):
    _, _, _, runs, _ = first_blend
    broken = {"model": "BPR", "set": {"epochs": 2, "embedding_size": 16, "learning_rate": 1.0e30}}
    recipe = write_recipe(
        tmp_path / "recipe.yaml", {"EASE": MEMBERS["EASE"], "Broken": broken, "MultiVAE": MEMBERS["MultiVAE"]}
    )
    assert cli(recipe, tiny_raw, data_dir, tmp_path / "out", runs) == 0
    err = capsys.readouterr().err
    assert "Broken failed: ValueError: Training loss is nan" in err
    assert "member Broken left out of the blend" in err
    summary = read_summary(tmp_path / "out")
    assert summary["blend"]["left_out"] == ["Broken"] and summary["blend"]["failed"] == 1
    failed = runs_by_member(summary)["Broken", None]
    assert failed["status"] == "failed" and "Training loss is nan" in (Path(failed["log"]) / "error.txt").read_text()
    assert [m["name"] for m in summary["members"]] == ["EASE", "MultiVAE"]
    assert "Broken: FAILED: ValueError: Training loss is nan" in (tmp_path / "out" / "report.txt").read_text()

    # with one member left there is nothing to blend: exit 1, no output folder
    recipe = write_recipe(tmp_path / "two.yaml", {"EASE": MEMBERS["EASE"], "Broken": broken})
    assert cli(recipe, tiny_raw, data_dir, tmp_path / "lonely", runs) == 1
    err = capsys.readouterr().err
    assert "error: only 1 of 2 members finished, an ensemble needs two; nothing blended" in err
    assert not (tmp_path / "lonely").exists()


def test_an_output_folder_that_is_not_a_blend_is_refused(tmp_path, tiny_raw, data_dir, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    assert cli(write_recipe(tmp_path / "recipe.yaml"), tiny_raw, data_dir, tmp_path / "out", tmp_path / "runs") == 2
    assert "exists and is not a blend's; choose another --output" in capsys.readouterr().err
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


def test_read_recipe_refuses_a_recipe_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("- EASE\n- SASRec\n")
    with pytest.raises(ConfigError, match="expected `key: value` lines"):
        read_recipe(path)
