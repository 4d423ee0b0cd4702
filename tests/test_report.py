"""The report over constructed run and ensemble folders."""

import json
import subprocess
import sys

import matplotlib.image
import pandas as pd
import pytest
from conftest import ROOT

from recbole_ext.report import main, report_table


@pytest.mark.parametrize("module", ["recbole_ext.report", "recbole_ext.leaderboard", "recbole_ext.ensemble"])
def test_commands_that_read_outputs_start_without_torch_or_recbole(module):
    check = (
        f"import {module}, sys; loaded = {{'torch', 'recbole', 'ray'}} & set(sys.modules); assert not loaded, loaded"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def write_summary(folder, model, recall, ndcg=0.1, fingerprint="fp-1", timings=None, submission=True, **extra):
    folder.mkdir(parents=True)
    summary = {
        "model": model,
        "holdout": {"recall@10": recall, "ndcg@10": ndcg},
        "timings": timings or {"train": 1.0},
        "data": {"fingerprint": fingerprint},
        **extra,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    if submission:  # a finished run or ensemble; a validate-only tune trial writes none
        (folder / "submission.csv").write_text("user,item\n")
    return folder


def ease(folder, recall, side_weights=None, **kw):
    recbole = {
        "MODEL_TYPE": "ModelType.TRADITIONAL",
        "reg_weight": 250.0,
        "side_weights": side_weights or {},
        "learning_rate": 0.001,
        "MAX_ITEM_LIST_LENGTH": 50,
        "epochs": 100,
    }
    return write_summary(folder, "EASE", recall, config={"recbole": recbole}, epochs_run=1, **kw)


def sasrec(folder, recall, **kw):
    recbole = {
        "MODEL_TYPE": "ModelType.SEQUENTIAL",
        "hidden_size": 32,
        "n_layers": 2,
        "MAX_ITEM_LIST_LENGTH": 20,
        "learning_rate": 0.001,
        "epochs": 5,
        "inner_size": 64,
    }
    return write_summary(folder, "SASRec", recall, config={"recbole": recbole}, epochs_run=5, **kw)


def ensemble(folder, recall, **kw):
    members = [{"name": "EASE-1"}, {"name": "SASRec-1"}]
    return write_summary(
        folder, "ensemble", recall, method="rank", members=members, weights={"EASE-1": 0.7, "SASRec-1": 0.3}, **kw
    )


@pytest.fixture
def outputs(tmp_path):
    root = tmp_path / "outputs"
    ease(root / "EASE-1", 0.25, timings={"valid_train": 2.25, "full_train": 0.75, "write": 0.5})
    sasrec(root / "SASRec-1", 0.14)
    ensemble(root / "ensemble-rank-1", 0.27)
    sasrec(root / "tune" / "trial_3", 0.12)  # nested folders count
    ease(root / "EASE-genres", 0.11, side_weights={"genre": 20.0})
    ease(root / ".EASE-2.partial-99", 0.9)  # a run still being written does not
    ease(root / "EASE-3.failed", 0.8, submission=False)  # a run whose final fit failed keeps its validation
    sasrec(root / "tune" / "trials" / "a1b2c_00001", 0.5, submission=False)  # a validate-only tune trial
    return root


def test_the_table_lists_finished_runs_best_first_with_their_key_settings(outputs):
    table, skipped = report_table(outputs)
    assert skipped == []
    assert table["run"].tolist() == ["ensemble-rank-1", "EASE-1", "SASRec-1", "tune/trial_3", "EASE-genres"]
    assert table["model"].tolist() == ["ensemble(rank)", "EASE", "SASRec", "SASRec", "EASE"]
    assert table["settings"].tolist()[:3] + table["settings"].tolist()[4:] == [
        "EASE-1+SASRec-1 weights=0.70/0.30",
        "reg_weight=250.0",  # EASE is not trained by epochs: no learning rate, no epochs; no side information
        "hidden_size=32 n_layers=2 MAX_ITEM_LIST_LENGTH=20 learning_rate=0.001 epochs=5",
        "reg_weight=250.0 side_weights={'genre':20.0}",
    ]
    assert table["recall@10"].tolist() == [0.27, 0.25, 0.14, 0.12, 0.11]
    assert table.loc[1, "seconds"] == 3.5


def test_cli_writes_csv_markdown_and_a_png(outputs, capsys):
    assert main([str(outputs)]) == 0
    printed = capsys.readouterr().out
    assert printed.index("ensemble-rank-1") < printed.index("EASE-1") < printed.index("SASRec-1")
    assert "note:" not in printed  # one data version
    written = pd.read_csv(outputs / "report.csv")
    assert written["run"].tolist() == ["ensemble-rank-1", "EASE-1", "SASRec-1", "tune/trial_3", "EASE-genres"]
    assert written["fingerprint"].eq("fp-1").all()
    markdown = (outputs / "report.md").read_text()
    assert markdown.count("## data fp-1") == 1 and "| EASE-1 " in markdown and "0.2500" in markdown
    image = matplotlib.image.imread(outputs / "report.png")
    assert image.shape[0] > 200 and image.shape[1] > 600
    assert not [p.name for p in outputs.iterdir() if p.name.startswith(".report")]


def test_runs_on_different_data_are_grouped_not_ranked_together(tmp_path, capsys):
    root = tmp_path / "outputs"
    ease(root / "EASE-small", 0.30, fingerprint="fp-small")
    ease(root / "EASE-big", 0.16, fingerprint="fp-big")
    sasrec(root / "SASRec-big", 0.20, fingerprint="fp-big")
    assert main([str(root), "--output", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert "note: runs on different data versions" in printed
    big, small = printed.index("data fp-big (2 runs)"), printed.index("data fp-small (1 runs)")
    assert small < printed.index("EASE-small") < big < printed.index("SASRec-big") < printed.index("EASE-big")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert markdown.index("## data fp-small") < markdown.index("## data fp-big")
    assert pd.read_csv(tmp_path / "report" / "report.csv")["fingerprint"].tolist() == ["fp-big", "fp-big", "fp-small"]
    assert not (root / "report.csv").exists()


def test_a_run_without_a_fingerprint_is_its_own_group(tmp_path, capsys):
    root = tmp_path / "outputs"
    ease(root / "EASE-new", 0.30, fingerprint="fp-new")
    sasrec(root / "SASRec-old", 0.20, fingerprint=None)  # an older summary.json, without data.fingerprint
    assert main([str(root)]) == 0
    printed = capsys.readouterr().out
    assert printed.index("data fp-new (1 runs)") < printed.index("data unknown (1 runs)") < printed.index("SASRec-old")
    assert (root / "report.png").is_file()


def test_each_data_version_gets_its_own_x_axis(tmp_path):
    from recbole_ext.report import bar_figure

    root = tmp_path / "outputs"
    ease(root / "EASE-small", 0.30, fingerprint="fp-small")
    ease(root / "EASE-big", 0.06, fingerprint="fp-big")
    sasrec(root / "SASRec-big", 0.04, fingerprint="fp-big")
    figure = bar_figure(report_table(root)[0])
    small, big = figure.axes
    assert small.get_title(loc="left") == "data fp-small" and big.get_title(loc="left") == "data fp-big"
    assert small.get_xlim()[1] == pytest.approx(0.30 * 1.2) and big.get_xlim()[1] == pytest.approx(0.06 * 1.2)
    assert not small.get_shared_x_axes().joined(small, big)
    assert small.get_xlabel() == big.get_xlabel() != ""  # every panel says what it measures


def test_a_broken_summary_is_skipped_with_a_message(outputs, capsys):
    (outputs / "broken").mkdir()
    (outputs / "broken" / "summary.json").write_text('{"model": "EASE"')  # cut off
    (outputs / "broken" / "submission.csv").write_text("user,item\n")
    assert main([str(outputs)]) == 0
    error = capsys.readouterr().err
    assert error.startswith(f"skipped {outputs / 'broken' / 'summary.json'}: not a run summary (JSONDecodeError")
    assert len(pd.read_csv(outputs / "report.csv")) == 5


def test_nothing_to_report_is_an_error_that_writes_nothing(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty" / "EASE-1.failed").mkdir(parents=True)
    assert main([str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {tmp_path / 'missing'}: no such folder",
        f"error: {tmp_path / 'empty'}: no finished run or ensemble (no summary.json beside a submission.csv below it)",
    ]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["EASE-1.failed", "empty"]


def with_users(folder, recall_by_user):
    """A run's holdout_users.csv: {user: recall@10}."""
    users = pd.DataFrame({"user": list(recall_by_user), "recall@10": list(recall_by_user.values())})
    users.assign(**{"ndcg@10": 0.0}).to_csv(folder / "holdout_users.csv", index=False)
    return folder


def breakdown(recall, low, high):
    """A holdout_detail whose parts and groups score recall, recall / 2, ...; ndcg one tenth of each."""
    scores = {
        "last": recall / 2,
        "random": recall * 1.5,
        "light": recall * 1.2,
        "medium": recall,
        "heavy": recall * 0.8,
    }
    groups = {name: {"users": 1, "recall@10": value, "ndcg@10": value / 10} for name, value in scores.items()}
    return {
        "users": 4,
        "interval": {"recall@10": [low, high]},
        "parts": {name: groups[name] for name in ("last", "random")},
        "activity": {name: groups[name] for name in ("light", "medium", "heavy")},
    }


def test_each_run_is_compared_with_the_best_over_the_same_users(tmp_path, capsys):
    from recbole_ext import leaderboard

    root = tmp_path / "outputs"
    # per user: best 1, .5, 0, .5; other .5, .5, 0, 0: differences -.5, 0, 0, -.5, mean -.25
    with_users(ease(root / "EASE-1", 0.5, holdout_detail=breakdown(0.5, 0.2, 0.8)), {1: 1.0, 2: 0.5, 3: 0.0, 4: 0.5})
    other = with_users(
        sasrec(root / "SASRec-1", 0.25, holdout_detail=breakdown(0.25, 0.0, 0.5)), {1: 0.5, 2: 0.5, 3: 0.0, 4: 0.0}
    )
    ease(root / "EASE-old", 0.1)  # written before per-user scores existed: no comparison, no interval
    assert leaderboard.main(["add", str(other), "--public", "0.1234", "--outputs", str(root)]) == 0
    capsys.readouterr()

    table = report_table(root)[0].set_index("run")
    assert table.loc["EASE-1", ["vs best", "vs best low", "vs best high"]].tolist() == [0.0, 0.0, 0.0]
    difference, low, high = table.loc["SASRec-1", ["vs best", "vs best low", "vs best high"]]
    assert difference == pytest.approx(-0.25) and -0.5 <= low < difference < high <= 0.0
    assert table.loc["EASE-old", ["vs best", "ci low", "recall@10 last"]].isna().all()
    assert table.loc["SASRec-1", ["ci low", "ci high"]].tolist() == [0.0, 0.5]
    assert table.loc["SASRec-1", ["recall@10 last", "ndcg@10 last", "recall@10 heavy"]].tolist() == pytest.approx(
        [0.125, 0.0125, 0.2]
    )
    assert table.loc["SASRec-1", "public"] == 0.1234 and table[["public", "private"]].notna().sum().tolist() == [1, 0]

    assert main([str(root)]) == 0
    printed = capsys.readouterr().out
    first_table = printed.split("\n\n")[0]
    ease_line = next(line for line in first_table.splitlines() if line.startswith("EASE-1 "))
    assert "0.2000 to 0.8000" in ease_line and " best " in ease_line
    assert f"{difference:+.4f} ({low:+.4f} to {high:+.4f})" in printed and "0.1234" in printed
    assert "private" not in first_table  # no private score recorded: no column
    assert "0.1250 / 0.0125" in printed  # SASRec-1 on the last items: recall@10 / ndcg@10
    markdown = (root / "report.md").read_text()
    assert "| 0.2500 / 0.0250 |" in markdown  # SASRec-1's medium users
