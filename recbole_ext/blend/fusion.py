"""The ensemble's maths (the methods: docs/blends.md): fusing runs' top-N lists into one
top 10 (``blender``), and fitting and cross-fitting the weights on the holdout (``evaluate``).
"""

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recbole_ext.evaluator.metrics import COMPETITION, NDCG, K, objective_means, split_users

METHODS = ("priority", "rank", "score")
RRF_OFFSET = 60  # reciprocal-rank fusion's usual constant (Cormack et al. 2009)
GRID_STEPS = 10  # weights in steps of 1/10 ...
MAX_GRID = 300  # ... coarser when more runs would make the grid larger than this


class EnsembleError(ValueError):
    """The runs cannot be blended; the message names the runs and why."""


# --- the fusion methods: lists are frames (user, item, score, rank), rank 0 = best ---


def priority_fusion(lists, order, k=K):
    """The seed team's rule over the given lists; order: indices of lists, highest priority first."""
    long = pd.concat(
        [lists[m][["user", "item", "rank"]].assign(priority=p) for p, m in enumerate(order)], ignore_index=True
    )
    votes = long.groupby(["user", "item"]).size().rename("votes")
    lead = long.sort_values("priority", kind="stable").drop_duplicates(["user", "item"])  # the highest-priority run
    table = lead.join(votes, on=["user", "item"])
    ranked = table.sort_values(["user", "votes", "priority", "rank"], ascending=[True, False, True, True])
    _check_enough(ranked.groupby("user").size(), k)
    ranked = ranked.assign(score=ranked["votes"].astype(float), rank=ranked.groupby("user", sort=False).cumcount())
    return ranked.loc[ranked["rank"] < k, ["user", "item", "score", "rank"]].reset_index(drop=True)


def reciprocal_rank(top):
    return 1.0 / (RRF_OFFSET + top["rank"] + 1)


def normalised_score(top):
    """Scores mapped to [0, 1] per user over the list (1 when all are equal)."""
    by_user = top.groupby("user")["score"]
    low, high = by_user.transform("min"), by_user.transform("max")
    return ((top["score"] - low) / (high - low).where(high > low)).fillna(1.0)


CONTRIBUTIONS = {"rank": reciprocal_rank, "score": normalised_score}
# how much of each run's list a method reads by default: priority the runs' top 10
# (their submissions: "recommended"), rank and score the whole list (None)
DEFAULT_DEPTH = {"priority": K, "rank": None, "score": None}


@dataclass
class Candidates:
    """The union of the runs' lists: one row per (user, item), one value column per run.

    Rows are sorted by user, then best rank in any run, then item: the order
    that breaks ties of fused scores. A user's rows form a block; `slot` is a
    row's place in it, so scores fit a users x slots matrix for sorting.
    """

    keys: pd.DataFrame  # user, item, best_rank
    values: np.ndarray  # rows x runs, 0 where a run's list lacks the item
    block: np.ndarray  # 0, 0, ..., 1, 1, ...: the user's block of rows
    slot: np.ndarray  # the row's place in its block
    starts: np.ndarray  # the first row of each block
    counts: pd.Series  # rows per user


def candidates(lists, contribution):
    """contribution: a run's list -> one value per row (values: rows x runs), or several (rows x runs x values)."""
    long = pd.concat([top.assign(run=m) for m, top in enumerate(lists)], ignore_index=True)
    value = np.concatenate([np.asarray(contribution(top), dtype=float) for top in lists])
    pairs = long.groupby(["user", "item"])
    values = np.zeros((pairs.ngroups, len(lists), *value.shape[1:]))
    values[pairs.ngroup().to_numpy(), long["run"].to_numpy()] = value
    keys = pairs["rank"].min().rename("best_rank").reset_index()  # sorted by user, item
    order = keys.sort_values(["user", "best_rank"], kind="stable").index.to_numpy()
    keys, values = keys.iloc[order].reset_index(drop=True), values[order]
    user = keys["user"].to_numpy()
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    block = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(user)]))
    slot = np.arange(len(keys)) - starts[block]
    return Candidates(keys, values, block, slot, starts, keys.groupby("user").size())


def weighted_fusion(table, weights, k=K):
    """The k best fused items of each user; all of a user's candidates when fewer (at least a submission's K:
    a user with few unseen items has short lists)."""
    _check_enough(table.counts, min(k, K))
    by_user = np.full((len(table.starts), table.slot.max() + 1), -np.inf)  # -inf: a slot past a user's candidates
    by_user[table.block, table.slot] = table.values @ np.asarray(weights, dtype=float)
    width = min(k, by_user.shape[1])
    best_slots = np.argsort(-by_user, axis=1, kind="stable")[:, :width]  # stable: ties keep (best rank, item) order
    scores = np.take_along_axis(by_user, best_slots, axis=1).ravel()
    kept = np.isfinite(scores)
    rows = (table.starts[:, None] + best_slots).ravel()[kept]
    top = table.keys.iloc[rows][["user", "item"]].reset_index(drop=True)
    return top.assign(score=scores[kept], rank=np.tile(np.arange(width), len(table.starts))[kept])


def rank_fusion(lists, weights, k=K):
    return weighted_fusion(candidates(lists, reciprocal_rank), weights, k)


def score_fusion(lists, weights, k=K):
    return weighted_fusion(candidates(lists, normalised_score), weights, k)


def _check_enough(counts, k):
    short = counts[counts < k]
    if len(short):
        raise EnsembleError(
            f"{len(short)} users have fewer than {k} distinct items in the runs' lists together, "
            f"e.g. {short.index[:5].tolist()}: blend runs with longer lists (top_n)"
        )


def priority_order(weights):
    """Runs by decreasing weight; equal weights keep the command-line order."""
    return sorted(range(len(weights)), key=lambda m: -weights[m])


def blender(method, lists, depth=None):
    """weights -> the blended top 10 per user of the first `depth` items of these lists."""
    depth = depth or DEFAULT_DEPTH[method]
    if depth:
        lists = [top[top["rank"] < depth] for top in lists]
    if method == "priority":
        return lambda weights: priority_fusion(lists, priority_order(weights))
    table = candidates(lists, CONTRIBUTIONS[method])
    return lambda weights: weighted_fusion(table, weights)


# --- choosing weights on the holdout ---


def weight_grid(method, n_runs):
    """The candidate weights of --weights auto."""
    if method == "priority":
        return [
            tuple(float(n_runs - order.index(m)) for m in range(n_runs))
            for order in itertools.permutations(range(n_runs))
        ]
    steps = GRID_STEPS
    while steps > 1 and math.comb(steps + n_runs - 1, n_runs - 1) > MAX_GRID:
        steps -= 1
    return [tuple(part / steps for part in parts) for parts in _compositions(steps, n_runs)]


def _compositions(total, parts):
    """Every tuple of `parts` non-negative integers summing to `total`."""
    if parts == 1:
        yield (total,)
        return
    for first in range(total, -1, -1):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


def fit_weights(blend, grid, hidden, user_groups, objective):
    """For each group of holdout users, the grid point with the best (objective, ndcg@10) on it."""
    group_hidden = [hidden[hidden["user"].isin(users)] for users in user_groups]
    best = [None] * len(user_groups)
    for weights in grid:
        top = blend(weights)
        for g, group in enumerate(group_hidden):
            scores = objective_means(top, group, objective)
            key = (scores[objective.name], scores[NDCG])
            if best[g] is None or key > best[g][0]:  # ties: the earlier grid point
                best[g] = (key, weights)
    return [weights for _, weights in best]


def evaluate(method, lists, hidden, weights="auto", seed=0, depth=None, objective=COMPETITION):
    """Fitted and cross-fitted holdout scores of a blend of validation lists (with the objective's, which
    the weights maximise), the weights behind them, and the cross-fitted lists (each half blended with the
    weights fitted on the other)."""
    blend = blender(method, lists, depth)
    half_a, half_b = split_users(hidden["user"], seed)
    grid = weight_grid(method, len(lists)) if weights == "auto" else None
    if grid:
        all_users = np.concatenate([half_a, half_b])
        fitted, fit_a, fit_b = fit_weights(blend, grid, hidden, [all_users, half_a, half_b], objective)
    else:
        fitted = fit_a = fit_b = tuple(weights)
    cross = pd.concat([_of_users(blend(fit_b), half_a), _of_users(blend(fit_a), half_b)])
    return {
        "fitted": objective_means(blend(fitted), hidden, objective),
        "cross_fitted": objective_means(cross, hidden, objective),
        "cross_fitted_lists": cross,
        "weights": fitted,
        "halves": [(half_a, fit_a), (half_b, fit_b)],
        "grid_points": len(grid) if grid else None,
    }


def _of_users(top, users):
    return top[top["user"].isin(users)]
