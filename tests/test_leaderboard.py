"""The leaderboard log on hand-made run folders: add, list, rank correlation, plot; bad input in one line."""

import json
import warnings

import matplotlib.image
import pandas as pd
import pytest

from recbole_ext.leaderboard import main, verdict


def write_run(folder, recall, model="EASE", interval=None, fingerprint="fp-1", submission=True, **extra):
    folder.mkdir(parents=True)
    if submission:
        (folder / "submission.csv").write_text("user,item\n1,2\n")
    summary = {
        "model": model,
        "holdout": {"recall@10": recall, "ndcg@10": recall / 2},
        "data": {"fingerprint": fingerprint},
        **extra,
    }
    if interval:
        summary["holdout_detail"] = {"interval": {"recall@10": interval}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture
def submitted(tmp_path):
    """Four runs recorded with their public scores, two with private ones.

    holdout 0.30 > 0.25 > 0.22 > 0.20; public 0.18 > 0.16 > 0.15 > 0.14, the run at
    0.20 (public 0.15) and the one at 0.22 (public 0.14) swapped: in holdout order the
    public ranks are 1, 2, 4, 3, so Spearman = 1 - 6 * (1 + 1) / (4 * 15) = 0.8, and
    5 of the 6 pairs are in the same order.
    """
    outputs = tmp_path / "outputs"
    runs = {"EASE-a": (0.30, 0.18), "EASE-b": (0.25, 0.16), "SASRec-c": (0.22, 0.14), "MultiVAE-d": (0.20, 0.15)}
    for name, (recall, public) in runs.items():
        run = write_run(outputs / name, recall, interval=[recall - 0.01, recall + 0.01])
        assert main(["add", str(run), "--public", str(public), "--outputs", str(outputs)]) == 0
    for name, private in (("EASE-a", 0.17), ("EASE-b", 0.165)):
        assert (
            main(
                [
                    "add",
                    str(outputs / name),
                    "--public",
                    str(runs[name][1]),
                    "--private",
                    str(private),
                    "--outputs",
                    str(outputs),
                    "--replace",
                ]
            )
            == 0
        )
    return outputs


def test_add_records_the_run_with_its_holdout_scores(submitted, tmp_path, capsys):
    blend = write_run(tmp_path / "elsewhere" / "blend", 0.27, model="ensemble", method="rank", interval=[0.26, 0.28])
    assert main(["add", str(blend), "--public", "0.1612", "--outputs", str(submitted)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"recorded {blend}: holdout recall@10 0.2700, public 0.1612 in {submitted / 'leaderboard.csv'}"
    )
    log = pd.read_csv(submitted / "leaderboard.csv")
    assert log["run"].tolist() == [str(submitted / name) for name in ("SASRec-c", "MultiVAE-d", "EASE-a", "EASE-b")] + [
        str(blend)
    ]  # a replaced run moves to the end
    row = log.iloc[-1]
    assert (
        row["model"],
        row["fingerprint"],
        row["recall@10"],
        row["ci low"],
        row["ci high"],
        row["ndcg@10"],
        row["public"],
    ) == ("ensemble(rank)", "fp-1", 0.27, 0.26, 0.28, 0.135, 0.1612)
    assert pd.isna(row["private"])
    assert log.set_index("run").loc[str(submitted / "EASE-a"), ["public", "private"]].tolist() == [0.18, 0.17]
    assert not [p.name for p in submitted.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_the_listing_judges_the_holdout_by_its_rank_correlation(submitted, capsys):
    assert main(["--outputs", str(submitted)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("data fp-1 (4 submissions)")
    assert printed.index("EASE-a") < printed.index("EASE-b") < printed.index("SASRec-c") < printed.index("MultiVAE-d")
    assert (
        "public (Spearman +0.80, 5 of 6 pairs in the same order): the holdout ranks submissions the way "
        "the leaderboard does"
    ) in printed
    assert "private: 2 submissions with a score; too few to tell (record at least 3)" in printed
    assert printed.rstrip().endswith(
        f"plot: {submitted / 'leaderboard.png'}\nestimates: {submitted / 'leaderboard.json'}"
    )
    image = matplotlib.image.imread(submitted / "leaderboard.png")
    assert image.shape[0] > 400 and image.shape[1] > 500


@pytest.mark.parametrize(
    "board, words",
    [
        ([0.10, 0.11, 0.12, 0.13, 0.14], "Spearman +1.00, 10 of 10 pairs in the same order): the holdout ranks"),
        # board ranks 3, 1, 2, 5, 4: sum of squared rank differences 8, Spearman 1 - 6 * 8 / 120 = 0.6;
        # the pairs (1, 2), (1, 3) and (4, 5) are swapped
        (
            [0.12, 0.10, 0.11, 0.14, 0.13],
            "Spearman +0.60, 7 of 10 pairs in the same order): the holdout roughly agrees",
        ),
        ([0.14, 0.13, 0.12, 0.11, 0.10], "Spearman -1.00, 0 of 10 pairs in the same order): the holdout does not rank"),
    ],
)
def test_the_verdict_follows_the_rank_correlation(board, words):
    local = pd.Series([0.20, 0.21, 0.22, 0.23, 0.24])
    assert verdict(local, pd.Series(board), "public").startswith(f"public ({words}")


def test_submissions_on_different_data_are_judged_apart(submitted, capsys):
    other = write_run(submitted / "EASE-other", 0.40, fingerprint="fp-2")
    assert main(["add", str(other), "--public", "0.1", "--outputs", str(submitted)]) == 0
    assert main(["--outputs", str(submitted)]) == 0
    printed = capsys.readouterr().out
    assert printed.index("data fp-1 (4 submissions)") < printed.index("data fp-2 (1 submissions)")
    assert "Spearman +0.80" in printed  # fp-2's run does not join fp-1's ranking
    assert "public: 1 submission with a score; too few to tell" in printed


def refused(capsys, argv, folder):
    """main's exit code and its one error line; nothing under folder changed."""
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    code = main(argv)
    after = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    assert after == before, "a refused command changed files"
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    return code, lines[0]


def test_bad_input_gets_one_clear_line_and_changes_nothing(submitted, tmp_path, capsys):
    log = str(submitted / "leaderboard.csv")
    run = submitted / "EASE-a"
    (tmp_path / "unfinished").mkdir()
    cases = {
        ("add", str(tmp_path / "nowhere"), "--public", "0.16"): f"error: {tmp_path / 'nowhere'}: no such run folder",
        (
            "add",
            str(tmp_path / "unfinished"),
            "--public",
            "0.16",
        ): f"error: {tmp_path / 'unfinished'}: not a finished run (no summary.json)",
        (
            "add",
            str(run),
            "--public",
            "16",
            "--replace",
        ): "error: --public 16: a leaderboard score is a Recall@10, a number from 0 to 1",
        (
            "add",
            str(run),
            "--public",
            "0.16",
            "--private",
            "-0.1",
            "--replace",
        ): "error: --private -0.1: a leaderboard score is a Recall@10, a number from 0 to 1",
        (
            "add",
            str(run),
            "--public",
            "nan",
            "--replace",
        ): "error: --public nan: a leaderboard score is a Recall@10, a number from 0 to 1",
        (
            "add",
            str(run),
            "--public",
            "0.2x",
        ): "error: --public 0.2x: a leaderboard score is a Recall@10, a number from 0 to 1",
        (
            "add",
            str(run),
            "--public",
            "0.19",
        ): f"error: {run} is recorded already (public 0.1800, private 0.1700) in {log}; "
        "add --replace to change its scores",
    }
    for argv, message in cases.items():
        assert refused(capsys, [*argv, "--outputs", str(submitted)], tmp_path) == (2, message)
    assert refused(capsys, ["--outputs", str(tmp_path / "empty")], tmp_path) == (
        2,
        f"error: {tmp_path / 'empty' / 'leaderboard.csv'}: no submission recorded yet; record one with "
        "`python -m recbole_ext.leaderboard add RUN_DIR --public SCORE`",
    )
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "leaderboard.csv").write_text("run,public\nx,0.1\n")
    assert refused(capsys, ["--outputs", str(tmp_path / "broken")], tmp_path) == (
        2,
        f"error: {tmp_path / 'broken' / 'leaderboard.csv'}: not a leaderboard log (no column model, "
        "fingerprint, recall@10, ci low, ci high, ndcg@10, private, recorded)",
    )


@pytest.mark.parametrize("bad, shown", [("abc", "'abc'"), ("-0.5", "'-0.5'"), ("16", "'16'"), ("", "empty")])
def test_a_hand_edited_log_with_a_bad_score_is_refused_naming_its_line(submitted, capsys, bad, shown):
    log = submitted / "leaderboard.csv"
    rows = log.read_text().splitlines()
    cells = rows[2].split(",")
    cells[rows[0].split(",").index("public")] = bad  # the second submission's: line 3 of the file
    rows[2] = ",".join(cells)
    log.write_text("\n".join(rows) + "\n")
    message = f"error: {log}:3: public is {shown}, expected a Recall@10 or NDCG@10, a number from 0 to 1"
    assert refused(capsys, ["--outputs", str(submitted)], submitted) == (2, message)
    other = write_run(submitted.parent / "other", 0.2)
    argv = ["add", str(other), "--public", "0.15", "--outputs", str(submitted)]
    assert refused(capsys, argv, submitted) == (2, message)  # add does not carry the bad row on


def test_only_a_folder_holding_a_submission_is_recorded(submitted, tmp_path, capsys):
    stopped = write_run(tmp_path / "EASE-x.interrupted", 0.2, submission=False)
    trial = write_run(tmp_path / "tune" / "trials" / "abc_00001", 0.2, submission=False)
    for folder in (stopped, trial):
        argv = ["add", str(folder), "--public", "0.15", "--outputs", str(submitted)]
        assert refused(capsys, argv, tmp_path) == (
            2,
            f"error: {folder}: not a submitted run (no submission.csv); "
            "record the run, ensemble or best/ folder that wrote it",
        )


def test_tied_scores_are_stated_without_a_warning(tmp_path, capsys):
    outputs = tmp_path / "outputs"
    for name, recall in (("a", 0.30), ("b", 0.25), ("c", 0.22)):
        run = write_run(outputs / name, recall)
        assert main(["add", str(run), "--public", "0.15", "--outputs", str(outputs)]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's RuntimeWarning of a correlation of constants fails the test
        assert main(["--outputs", str(outputs)]) == 0
    printed = capsys.readouterr().out
    assert (
        "public: the 3 submissions have the same public score; it puts them in no order, "
        "so there is no ranking to compare"
    ) in printed
