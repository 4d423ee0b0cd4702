"""The simulated boards of bench/calibration.py: submissions scored on a board, the estimate's interval
against the board's true share of latest items, and its coverage on boards simulated by resampling users
and on synthetic boards (RULES: the F test on the residuals, the users' sampling noise alone, and the span
of both, the listing's interval)."""

from pathlib import Path

import numpy as np
import pandas as pd

# part recalls of four kinds of submission on the synthetic boards: EASE-like, sequential, VAE-like, a blend
SYNTHETIC_LAST = np.array([0.10, 0.27, 0.18, 0.14])
SYNTHETIC_RANDOM = np.array([0.30, 0.12, 0.24, 0.28])
RESAMPLES = 500  # simulated boards per case for the intervals' coverage
SYNTHETIC_BOARDS = 200  # per synthetic case
# the interval rules compared: the F test on the residuals (the listing's until 2026-12-07), the users' sampling
# noise alone (a chi-square interval), and the listing's: the span of both
RULES = ("residuals (F test)", "sampling noise", "spanning both (the listing's)")


def board_users(run, board):
    """Each board user's Recall@10 of a run's submission.csv: a Series by user."""
    from recbole_ext.evaluator.metrics import RECALL, user_scores

    top = pd.read_csv(Path(run) / "submission.csv")
    return user_scores(top.assign(rank=top.groupby("user").cumcount()), board)[RECALL]


def board_score(run, board):
    """The leaderboard's Recall@10 of a run's submission.csv on the board."""
    return float(board_users(run, board).mean())


def rule_intervals(means, parts):
    """{rule: ((low, high), whether the users' sampling noise made it)} of RULES for one board: means the
    submissions' holdout part means and board scores, parts their per-user holdout part recalls."""
    from recbole_ext.evaluator import calibration

    estimate = calibration.fit_share(*means, user_scores=parts)
    if estimate.last_share is None:  # cannot tell (parts too alike): no claim, counted as 0 to 1
        return {rule: ((0.0, 1.0), False) for rule in RULES}
    residuals, sampling = estimate.parts_of_interval
    return {
        RULES[0]: (residuals, False),
        RULES[1]: (sampling, True),
        RULES[2]: (estimate.interval, estimate.interval != residuals),
    }


def level_on_board(run, board, share, without_board_items=False):
    """A run's board score over its holdout mix at the true share, the holdout's parts over the board's users:
    1 where the board is a resampled holdout. without_board_items: the holdout scored anew from the validation
    fit's top 50 without the board's items (the validation fit never saw them, so they take slots in its lists
    that count as misses on the holdout; the refit's submission has the holdout's items in its training data)."""
    import json

    from recbole_ext.evaluator import calibration
    from recbole_ext.evaluator.metrics import part_scores
    from recbole_ext.utils.run_folder import read_holdout_users

    users = np.sort(board["user"].unique())
    if without_board_items:
        holdout = pd.read_csv(json.loads((Path(run) / "summary.json").read_text())["data"]["holdout_path"])
        top = pd.read_csv(Path(run) / "valid_top50.csv")
        top = top.merge(board[["user", "item"]], on=["user", "item"], how="left", indicator=True)
        top = top[top["_merge"] == "left_only"]
        parts = part_scores(top.assign(rank=top.groupby("user").cumcount()), holdout[holdout["user"].isin(users)])
    else:
        parts = read_holdout_users(run).loc[users]
    return board_score(run, board) / (
        share * parts[calibration.LAST].mean() + (1 - share) * parts[calibration.RANDOM].mean()
    )


def board_users_fit(runs, board):
    """The fit of the runs' board scores with their holdout parts over the board's users only (the
    competition's case: the boards score the holdout's users)."""
    from recbole_ext.evaluator import calibration
    from recbole_ext.utils.run_folder import read_holdout_users

    users = np.sort(board["user"].unique())
    parts = [
        [read_holdout_users(run).loc[users, part] for run in runs] for part in (calibration.LAST, calibration.RANDOM)
    ]
    means = [[values.mean() for values in part] for part in parts]
    scores = [board_score(run, board) for run in runs]
    return calibration.fit_share(*means, scores, user_scores=[np.column_stack(part) for part in parts])


def coverage_of(boards, true_share):
    """Per rule: the share of boards whose interval holds true_share, the mean width, the share from the noise.
    boards: (means, parts) of each simulated board."""
    found = {rule: [] for rule in RULES}
    for means, parts in boards:
        intervals = rule_intervals(means, parts)
        for rule in RULES:
            (low, high), used = intervals[rule]
            found[rule].append((low <= true_share <= high, high - low, used))
    return {rule: np.mean(values, axis=0) for rule, values in found.items()}


def coverage(runs, board, true_share, board_users_only, resamples=RESAMPLES):
    """coverage_of boards simulated by resampling users (the same draw for the holdout and the board: the
    competition's boards score every user). The holdout's part means are over all its users (what the log
    records) or, board_users_only, over the board's users (the competition's case)."""
    from recbole_ext.evaluator import calibration
    from recbole_ext.utils.run_folder import read_holdout_users

    tables = [read_holdout_users(run) for run in runs]
    users = np.sort(board["user"].unique()) if board_users_only else tables[0].index
    parts = [np.column_stack([t.loc[users, part] for t in tables]) for part in (calibration.LAST, calibration.RANDOM)]
    on_board = np.column_stack([board_users(run, board).reindex(users).to_numpy() for run in runs])
    rng = np.random.default_rng(0)
    boards = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(users), len(users))
        resampled = (parts[0][drawn], parts[1][drawn], on_board[drawn])
        boards.append(([np.nanmean(values, axis=0) for values in resampled], resampled[:2]))  # NaN: not on the board
    return coverage_of(boards, true_share)


def synthetic_board(share, seed, users=600, shifted=None):
    """Per-user holdout part recalls (2 last + 8 random items) of four kinds of submission, and their board
    recalls (5 items, 5 x share of them latest), from the same per-user chances: a resampled holdout with
    that share of latest items, except the submissions of shifted ({index: level}), whose board chances are
    level times their holdout's. A user's ease scales all their chances; an item is found by every submission
    whose chance is above its draw (similar models find the same items). Returns ((last, random, board
    means), (last, random per user))."""
    rng = np.random.default_rng(seed)
    ease = rng.gamma(2.0, 0.5, (users, 1))
    levels = np.ones(len(SYNTHETIC_LAST))
    for index, level in (shifted or {}).items():
        levels[index] = level

    def recalls(chances, items):
        draws = rng.random((users, items, 1))
        return (draws < np.minimum(1, ease * chances)[:, None, :]).mean(axis=1)

    board_last = round(5 * share)
    last, random = recalls(SYNTHETIC_LAST, 2), recalls(SYNTHETIC_RANDOM, 8)
    on_board = board_last * recalls(SYNTHETIC_LAST * levels, board_last) if board_last else 0
    on_board = (on_board + (5 - board_last) * recalls(SYNTHETIC_RANDOM * levels, 5 - board_last)) / 5
    return [values.mean(axis=0) for values in (last, random, on_board)], (last, random)


def synthetic_coverage(boards=SYNTHETIC_BOARDS):
    """coverage_of synthetic boards: resampled holdouts, and boards where the sequential-like submission scores
    0.9 or 0.75 times its holdout chances."""
    rows = []
    for name, shifted in (("resampled holdout", None), ("one at 0.9", {1: 0.9}), ("one at 0.75", {1: 0.75})):
        for share in (0.2, 0.6):
            found = coverage_of([synthetic_board(share, seed, shifted=shifted) for seed in range(boards)], share)
            rows += [[name, share, rule, *(f"{v:.2f}" for v in values)] for rule, values in found.items()]
    return rows
