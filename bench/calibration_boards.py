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
# the holdout's parts the fit reads: as each run logged them (the listing's until 2026-12-07), board-like (the
# listing's since: evaluator/slots.py), and cut at 10 + BOARD_ITEMS x the board score (measured, not adopted)
PARTS = ("as logged", "board-like (the listing's)", "cut at 10 + 10 x board (not adopted)")
BOARD_ITEMS = 10  # hidden items per board user: a list that scores b on the board holds BOARD_ITEMS x b of them


def uniform_cut_parts(lists, holdout, board_score):
    """PARTS[2]: the holdout's parts of lists cut at 10 + BOARD_ITEMS x the board score (the slots the hidden items
    take), the holdout's other items left in."""
    from recbole_ext.evaluator import slots
    from recbole_ext.evaluator.metrics import K

    return slots.part_recalls_at(lists, holdout, K + BOARD_ITEMS * board_score)


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


def part_tables(runs, board):
    """{variant of PARTS: ((last, random) users x runs, board users x runs)}: the runs' per-user holdout part
    recalls, over the holdout's users (every one a board user, as in the competition), and their board recalls."""
    from recbole_ext.utils.leaderboard_log import board_like_part_scores, user_part_scores
    from recbole_ext.utils.run_folder import read_holdout_users

    on_board = [board_users(run, board) for run in runs]
    scores = [values.mean() for values in on_board]
    variants = {
        PARTS[0]: user_part_scores(runs),
        PARTS[1]: board_like_part_scores(runs, scores),
        PARTS[2]: board_like_part_scores(runs, scores, parts_of=uniform_cut_parts),
    }
    users = np.sort(read_holdout_users(runs[0]).index)
    return {
        name: (parts, np.column_stack([values.reindex(users) for values in on_board]))
        for name, parts in variants.items()
    }


def fit_of(parts, on_board):
    """fit_share of the runs' board scores on their holdout part means."""
    from recbole_ext.evaluator import calibration

    means = [np.nanmean(values, axis=0) for values in parts]
    return calibration.fit_share(*means, np.nanmean(on_board, axis=0), user_scores=parts)


def levels(parts, on_board, share):
    """Each run's board score over its holdout mix at the true share: 1 where the board is a resampled holdout."""
    last, random = (np.nanmean(values, axis=0) for values in parts)
    return np.nanmean(on_board, axis=0) / (share * last + (1 - share) * random)


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


def coverage(parts, on_board, true_share, resamples=RESAMPLES):
    """coverage_of boards simulated by resampling users (the same draw for the holdout and the board: the
    competition's boards score every user). The board scores change with the draw, the parts' cut with them not
    (a change of a hundredth of a slot)."""
    rng = np.random.default_rng(0)
    boards = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(on_board), len(on_board))
        resampled = (parts[0][drawn], parts[1][drawn], on_board[drawn])
        boards.append(([np.nanmean(values, axis=0) for values in resampled], resampled[:2]))
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


# synthetic boards with the slot effect: each kind of submission scores a user's holdout items, hidden items and
# FILLERS other items by a strength per part (kinds as SYNTHETIC_LAST/RANDOM), the user's ease and a noise shared
# by the kinds in part; the validation lists rank them all, the submission (the refit) all but the holdout's
SLOT_STRENGTH = {"last": np.array([0.55, 1.25, 0.95, 0.75]), "random": np.array([1.3, 0.75, 1.1, 1.25])}
FILLERS = 200


def synthetic_slot_lists(share, seed, users=600):
    """One synthetic board with the slot effect: BOARD_ITEMS hidden items per user, BOARD_ITEMS x share of them
    latest, and the holdout 2 + 8. Returns the holdout (user, item, part: items 0-9 of each user), each kind's
    validation ranks of them (users x 10 x kinds: every item ranked, the hidden ones among them) and its board
    recalls (users x kinds: the submission ranks all but the holdout's items)."""
    rng = np.random.default_rng(seed)
    board_last = round(BOARD_ITEMS * share)
    parts = ["last"] * 2 + ["random"] * 8 + ["last"] * board_last + ["random"] * (BOARD_ITEMS - board_last)
    relevant, kinds = len(parts), len(SYNTHETIC_LAST)
    shape = (users, relevant + FILLERS)
    scores = (rng.normal(size=(*shape, 1)) + rng.normal(size=(*shape, kinds))) / 2**0.5
    scores[:, :relevant] += np.array([SLOT_STRENGTH[part] for part in parts]) + rng.normal(0, 0.5, (users, 1, 1))
    above = scores[:, None, :, :] > scores[:, :relevant, None, :]  # users x relevant items x all items x kinds
    ranks = above.sum(axis=2)
    on_board = (ranks[:, 10:] - above[:, 10:, :10].sum(axis=2) < 10).mean(axis=1)
    holdout = pd.DataFrame({"user": np.repeat(np.arange(users), 10), "item": np.tile(np.arange(10), users)})
    return holdout.assign(part=np.tile(parts[:10], users)), ranks[:, :10], on_board


def synthetic_slot_board(share, seed, users=600):
    """{variant of PARTS: ((last, random, board means), (last, random per user))} of synthetic_slot_lists."""
    from recbole_ext.evaluator import slots
    from recbole_ext.evaluator.metrics import K

    holdout, ranks, on_board = synthetic_slot_lists(share, seed, users)
    score_parts = {
        PARTS[0]: lambda lists, score: slots.part_recalls_at(lists, holdout, K),
        PARTS[1]: lambda lists, score: slots.board_like_parts(lists, holdout, score),
        PARTS[2]: lambda lists, score: uniform_cut_parts(lists, holdout, score),
    }
    result = {}
    for variant, score_of in score_parts.items():
        tables = [
            score_of(holdout.assign(rank=ranks[:, :, k].ravel()), on_board[:, k].mean()) for k in range(ranks.shape[2])
        ]
        per_user = [np.column_stack([table[f"recall@10 {part}"] for table in tables]) for part in ("last", "random")]
        result[variant] = ([*(values.mean(axis=0) for values in per_user), on_board.mean(axis=0)], per_user)
    return result


def synthetic_slot_coverage(boards=SYNTHETIC_BOARDS // 2):
    """coverage_of synthetic boards with the slot effect, the fit on each variant of PARTS."""
    rows = []
    for share in (0.2, 0.6):
        simulated = [synthetic_slot_board(share, seed) for seed in range(boards)]
        for variant in PARTS:
            found = coverage_of([board[variant] for board in simulated], share)
            rows += [[variant, share, rule, *(f"{v:.2f}" for v in values)] for rule, values in found.items()]
    return rows
