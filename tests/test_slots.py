"""The slot effect (evaluator/slots.py): the holdout's parts scored as the board scores its hidden items, the fit
on them (the listing's where the run folders keep their validation lists), on synthetic boards whose lists have the
slot effect and on hand-made lists."""

import json

import numpy as np
import pandas as pd
import pytest
from test_leaderboard import write_run

from bench.calibration_boards import PARTS, synthetic_slot_board, synthetic_slot_lists
from recbole_ext.evaluator.calibration import fit_share
from recbole_ext.evaluator.metrics import part_scores
from recbole_ext.evaluator.slots import board_like_parts, part_recalls_at
from recbole_ext.leaderboard import main
from recbole_ext.utils.leaderboard_log import board_like_part_scores

LAST, RANDOM = "recall@10 last", "recall@10 random"


def hand_made():
    """User 1: last items 10, 11, random 20-27; user 2: random items only; user 3: a holdout but no list."""
    holdout = pd.DataFrame(
        [(1, 10, "last"), (1, 11, "last"), *((1, item, "random") for item in range(20, 28))]
        + [(2, item, "random") for item in (30, 31)]
        + [(3, 40, "last"), (3, 41, "random")],
        columns=["user", "item", "part"],
    )
    ranked = {20: 0, 10: 3, 21: 9, 11: 10, 22: 11, 23: 15, 30: 12}  # item: rank; the other ranks hold other items
    recommended = pd.DataFrame(
        [(1 if item < 30 else 2, item, rank) for item, rank in ranked.items()], columns=["user", "item", "rank"]
    )
    return recommended, holdout


def test_a_cut_between_whole_slots_counts_the_fraction_of_a_hit_there():
    recommended, holdout = hand_made()
    at_10 = part_recalls_at(recommended, holdout, 10)
    assert at_10.loc[1].tolist() == [0.5, 2 / 8]  # item 11 at rank 10 and item 22 at 11 are past the cut
    assert np.isnan(at_10.loc[2, LAST]) and at_10.loc[2, RANDOM] == 0.0 and at_10.loc[3].tolist() == [0.0, 0.0]
    assert at_10.loc[1, RANDOM] == part_scores(recommended, holdout).loc[1, RANDOM]  # the metric's own recall
    assert part_recalls_at(recommended, holdout, 10.5).loc[1].tolist() == [0.75, 2 / 8]  # half of item 11


def test_board_like_ranks_each_holdout_item_without_the_users_other_holdout_items_and_cuts_at_10_plus_the_board():
    """User 1's hits in rank order 20, 10, 21, 11, 22, 23 (ranks 0, 3, 9, 10, 11, 15) move up by the holdout items
    above them (0, 1, 2, 3, 4, 5 of them): ranks 0, 2, 7, 7, 7, 10; item 23 at 10 counts 0.2 at the cut 10.2.
    User 2's item 30 at rank 12 has no holdout item above it and stays out."""
    recommended, holdout = hand_made()
    assert part_recalls_at(recommended, holdout, 10, holdout_out=True).loc[1].tolist() == [1.0, 3 / 8]
    board_like = board_like_parts(recommended, holdout, board_score=0.2)
    assert board_like.loc[1].tolist() == pytest.approx([1.0, 3.2 / 8]) and board_like.loc[2, RANDOM] == 0.0


@pytest.mark.parametrize("share", [0.2, 0.6])
def test_the_fit_recovers_a_known_share_from_synthetic_lists_with_the_slot_effect(share):
    """The validation lists rank the hidden items beside the holdout's, the submissions do not rank the holdout's:
    as logged every submission scores 1.1 to 1.35 times its holdout mix on the board, and the fit is far off or
    wide; board-like each kind's mix holds within 5% (mean of 4 boards) and the fit finds the share, narrowly."""
    levels = []
    for seed in range(4):
        boards = synthetic_slot_board(share, seed)
        (last, random, board), users = boards[PARTS[0]]
        assert np.all(board / (share * last + (1 - share) * random) > 1.1)
        logged = fit_share(last, random, board, user_scores=users)
        assert abs(logged.last_share - share) > 0.1 or np.diff(logged.interval)[0] > 0.4
        (last, random, board), users = boards[PARTS[1]]
        levels.append(board / (share * last + (1 - share) * random))
        estimate = fit_share(last, random, board, user_scores=users)
        low, high = estimate.interval
        assert low <= share <= high and high - low <= 0.3 and abs(estimate.last_share - share) < 0.1
    assert np.all(np.abs(np.mean(levels, axis=0) - 1) < 0.05)


def write_listed_runs(outputs, share, users=300):
    """Four run folders on one synthetic board with the slot effect, logged with their board scores: three keep
    their validation lists (valid_top50.csv, other items at the ranks no holdout item holds), the fourth (like an
    ensemble) only its holdout_users.csv."""
    holdout, ranks, on_board = synthetic_slot_lists(share, 0, users)
    holdout_path = outputs / "holdout.csv"
    outputs.mkdir(parents=True)
    holdout.to_csv(holdout_path, index=False)
    runs = []
    for kind in range(ranks.shape[2]):
        lists = np.arange(100, 150)[None, :].repeat(users, axis=0)  # other items
        user, item = np.nonzero(ranks[:, :, kind] < 50)
        lists[user, ranks[user, item, kind]] = item
        top = pd.DataFrame({"user": np.repeat(np.arange(users), 50), "item": lists.ravel(), "score": 0.0})
        logged = part_scores(top.assign(rank=np.tile(np.arange(50), users)), holdout)
        parts = {part: {"recall@10": float(logged[f"recall@10 {part}"].mean())} for part in ("last", "random")}
        run = write_run(
            outputs / f"run-{kind}", 0.2, holdout_detail={"parts": parts}, data={"holdout_path": str(holdout_path)}
        )
        logged.rename_axis("user").to_csv(run / "holdout_users.csv")
        if kind < 3:
            top.to_csv(run / "valid_top50.csv", index=False)
        score = f"{on_board[:, kind].mean():.6f}"
        assert main(["add", str(run), "--public", score, "--outputs", str(outputs)]) == 0
        runs.append(run)
    return runs, on_board.mean(axis=0)


def test_the_listing_fits_the_parts_scored_as_the_board_scores_where_the_runs_keep_their_lists(tmp_path, capsys):
    outputs = tmp_path / "outputs"
    runs, board = write_listed_runs(outputs, 0.5)
    assert main(["--outputs", str(outputs)]) == 0
    assert "; the holdout's parts: board-like (each item ranked without the user's other holdout items" in (
        capsys.readouterr().out
    )
    estimate = json.loads((outputs / "leaderboard.json").read_text())["calibration"]
    low, high = estimate["interval"]
    assert estimate["holdout_parts"].startswith("board-like") and low <= 0.5 <= high and high - low <= 0.3
    for run in runs:
        (run / "valid_top50.csv").unlink(missing_ok=True)
    assert main(["--outputs", str(outputs)]) == 0
    assert "; the holdout's parts: as logged" in capsys.readouterr().out
    as_logged = json.loads((outputs / "leaderboard.json").read_text())["calibration"]
    assert as_logged["holdout_parts"] == "as logged" and as_logged["last_share"] != estimate["last_share"]


def test_a_run_without_lists_gets_its_logged_parts_times_the_mean_ratio_of_the_runs_with_them(tmp_path):
    runs, board = write_listed_runs(tmp_path / "outputs", 0.5, users=100)
    board_like = board_like_part_scores(runs, board)
    for part, values in zip((LAST, RANDOM), board_like):
        logged = np.column_stack([pd.read_csv(run / "holdout_users.csv", index_col="user")[part] for run in runs])
        ratios = np.nanmean(values, axis=0) / np.nanmean(logged, axis=0)
        found = logged[:, 3] > 0
        scaled = values[found, 3] / logged[found, 3]
        assert np.nanstd(scaled) < 1e-12 and np.nanmean(scaled) == pytest.approx(ratios[:3].mean())
        assert np.all(ratios[:3] > 1)  # freed slots: more hits
    (runs[0] / "holdout_users.csv").write_text("not a table\n")
    assert board_like_part_scores(runs, board) is None
