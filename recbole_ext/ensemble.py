"""Blend finished runs into one submission, with a holdout estimate not fitted to itself.

    python -m recbole_ext.ensemble RUN_DIR RUN_DIR ... [--method priority|rank|score]
                                   [--weights auto|w1,w2,...] [--depth N] [--seed N] [--output DIR]

Methods, over each run's list of its top DEPTH items (seen items are already
excluded there):
  priority  the seed team's rule: items in the lists of several runs first (more
            runs first), then each run's items in the priority order of the runs,
            until 10 per user. Weights only set the order (highest first).
            DEPTH 10 by default: the runs' own submissions.
  rank      weighted reciprocal-rank fusion: sum over runs of w / (60 + rank + 1),
            rank 0 = best; a run whose list lacks the item adds nothing.
  score     weighted sum of each run's scores, min-max normalised per user over the
            run's list; a run whose list lacks the item adds 0.
            rank and score read the whole list (top 50) by default.
Ties: the best rank in any run, then the item id.

--weights auto (the default) picks the weights on the holdout from a grid over the
simplex (step 0.1, coarser beyond 4 runs; for priority: every order of the runs),
by recall@10, then ndcg@10, then the earlier grid point (more weight on the runs
listed first). That number is fitted to the holdout. The honest one:
the holdout users are split in two halves (seeded); weights fitted on one half
blend the lists of the other; recall@10 over all users of both halves pooled is
the cross-fitted estimate. The submission uses the weights fitted on all users.
With given weights nothing is fitted: both numbers are the same.

The blend is compared with its best member over the same users: the mean of the
per-user differences (cross-fitted blend minus member) with a paired bootstrap
interval. Its per-user scores go to holdout_users.csv, as a run's do.
"""

import argparse
import datetime
import hashlib
import itertools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from atomic_data import Prepared
from recbole_ext import ConfigError
from recbole_ext.files import json_text
from recbole_ext.metrics import (
    RECALL, K, bootstrap_interval, describe_difference, describe_holdout, holdout_detail, holdout_metrics,
    mean_scores, paired_differences, part_scores, split_users,
)
from recbole_ext.run_folder import (
    FULL_TOP, SUBMISSION, SUMMARY, VALID_TOP, Timer, holdout_activity, output_folder, staged, submission_frame,
    write_holdout_users,
)

METHODS = ("priority", "rank", "score")
RRF_OFFSET = 60  # reciprocal-rank fusion's usual constant (Cormack et al. 2009)
GRID_STEPS = 10  # weights in steps of 1/10 ...
MAX_GRID = 300  # ... coarser when more runs would make the grid larger than this
ENSEMBLE_MODEL = "ensemble"  # the `model` of an ensemble's summary.json


class EnsembleError(ValueError):
    """The runs cannot be blended; the message names the runs and why."""


@dataclass
class Member:
    name: str
    path: Path
    summary: dict
    valid: pd.DataFrame  # user, item, score, rank: the validation fit's top-N
    full: pd.DataFrame  # the same for the final fit on all data


# --- the fusion methods: lists are frames (user, item, score, rank), rank 0 = best ---

def priority_fusion(lists, order, k=K):
    """The seed team's rule over the given lists; order: indices of lists, highest priority first."""
    long = pd.concat([lists[m][["user", "item", "rank"]].assign(priority=p) for p, m in enumerate(order)],
                     ignore_index=True)
    votes = long.groupby(["user", "item"]).size().rename("votes")
    lead = long.sort_values("priority", kind="stable").drop_duplicates(["user", "item"])  # the highest-priority run
    table = lead.join(votes, on=["user", "item"])
    ranked = table.sort_values(["user", "votes", "priority", "rank"], ascending=[True, False, True, True])
    return _first_k(ranked.assign(score=ranked["votes"].astype(float)), k)


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
    long = pd.concat([top.assign(run=m, value=contribution(top)) for m, top in enumerate(lists)], ignore_index=True)
    pairs = long.groupby(["user", "item"])
    values = np.zeros((pairs.ngroups, len(lists)))
    values[pairs.ngroup().to_numpy(), long["run"].to_numpy()] = long["value"].to_numpy()
    keys = pairs["rank"].min().rename("best_rank").reset_index()  # sorted by user, item
    order = keys.sort_values(["user", "best_rank"], kind="stable").index.to_numpy()
    keys, values = keys.iloc[order].reset_index(drop=True), values[order]
    user = keys["user"].to_numpy()
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    block = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(user)]))
    slot = np.arange(len(keys)) - starts[block]
    return Candidates(keys, values, block, slot, starts, keys.groupby("user").size())


def weighted_fusion(table, weights, k=K):
    _check_enough(table.counts, k)
    by_user = np.full((len(table.starts), table.slot.max() + 1), -np.inf)
    by_user[table.block, table.slot] = table.values @ np.asarray(weights, dtype=float)
    best_slots = np.argsort(-by_user, axis=1, kind="stable")[:, :k]  # stable: ties keep the (best rank, item) order
    rows = (table.starts[:, None] + best_slots).ravel()
    top = table.keys.iloc[rows][["user", "item"]].reset_index(drop=True)
    return top.assign(score=np.take_along_axis(by_user, best_slots, axis=1).ravel(),
                      rank=np.tile(np.arange(k), len(table.starts)))


def rank_fusion(lists, weights, k=K):
    return weighted_fusion(candidates(lists, reciprocal_rank), weights, k)


def score_fusion(lists, weights, k=K):
    return weighted_fusion(candidates(lists, normalised_score), weights, k)


def _first_k(ranked, k):
    """The first k rows per user of a frame sorted by user then preference."""
    _check_enough(ranked.groupby("user").size(), k)
    ranked = ranked.assign(rank=ranked.groupby("user", sort=False).cumcount())
    return ranked.loc[ranked["rank"] < k, ["user", "item", "score", "rank"]].reset_index(drop=True)


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
        return [tuple(float(n_runs - order.index(m)) for m in range(n_runs)) for order in
                itertools.permutations(range(n_runs))]
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


def fit_weights(blend, grid, hidden, user_groups):
    """For each group of holdout users, the grid point with the best (recall@10, ndcg@10) on it."""
    group_hidden = [hidden[hidden["user"].isin(users)] for users in user_groups]
    best = [None] * len(user_groups)
    for weights in grid:
        top = blend(weights)
        for g, group in enumerate(group_hidden):
            scores = holdout_metrics(top, group)
            key = (scores["recall@10"], scores["ndcg@10"])
            if best[g] is None or key > best[g][0]:  # ties: the earlier grid point
                best[g] = (key, weights)
    return [weights for _, weights in best]


def evaluate(method, lists, hidden, weights="auto", seed=0, depth=None):
    """Fitted and cross-fitted holdout scores of a blend of validation lists, the weights behind them,
    and the cross-fitted lists (each half blended with the weights fitted on the other)."""
    blend = blender(method, lists, depth)
    half_a, half_b = split_users(hidden["user"], seed)
    grid = weight_grid(method, len(lists)) if weights == "auto" else None
    if grid:
        all_users = np.concatenate([half_a, half_b])
        fitted, fit_a, fit_b = fit_weights(blend, grid, hidden, [all_users, half_a, half_b])
    else:
        fitted = fit_a = fit_b = tuple(weights)
    cross = pd.concat([_of_users(blend(fit_b), half_a), _of_users(blend(fit_a), half_b)])
    return {
        "fitted": holdout_metrics(blend(fitted), hidden),
        "cross_fitted": holdout_metrics(cross, hidden),
        "cross_fitted_lists": cross,
        "weights": fitted,
        "halves": [(half_a, fit_a), (half_b, fit_b)],
        "grid_points": len(grid) if grid else None,
    }


def _of_users(top, users):
    return top[top["user"].isin(users)]


# --- runs in, ensemble out ---

def load_members(run_dirs):
    """Finished runs of one data version and one holdout, or an EnsembleError."""
    paths = [Path(run_dir) for run_dir in run_dirs]
    if len({path.resolve() for path in paths}) < len(paths):
        raise EnsembleError(f"the same run is given twice: {' '.join(map(str, paths))}")
    names = [path.name for path in paths]
    if len(set(names)) < len(names):
        names = [str(path) for path in paths]
    summaries = [_read_summary(path) for path in paths]
    _check_same(names, [summary.get("data", {}).get("fingerprint") for summary in summaries], "data fingerprint")
    # by content: the same prepared data may sit under several data_dir folders
    holdouts = [Path(summary.get("data", {}).get("holdout_path", "")) for summary in summaries]
    for path, holdout in zip(paths, holdouts):
        if not holdout.is_file():
            raise EnsembleError(f"{path}: its holdout file {holdout} is gone")
    digests = [hashlib.sha256(holdout.read_bytes()).hexdigest() for holdout in holdouts]
    _check_same(names, digests, "holdout", shown=dict(zip(digests, holdouts)))
    return [
        Member(name, path, summary, _read_list(path / VALID_TOP), _read_list(path / FULL_TOP))
        for name, path, summary in zip(names, paths, summaries)
    ]


def _read_summary(path):
    if not path.is_dir():
        raise EnsembleError(f"{path}: no such run folder")
    if not (path / SUMMARY).is_file():
        raise EnsembleError(f"{path}: not a finished run (no {SUMMARY})")
    try:
        summary = json.loads((path / SUMMARY).read_text())
    except json.JSONDecodeError as error:
        raise EnsembleError(f"{path / SUMMARY}: not valid JSON ({error})") from None
    if summary.get("model") == ENSEMBLE_MODEL:
        raise EnsembleError(f"{path}: an ensemble, not a run; blend its member runs instead")
    if summary.get("error"):
        raise EnsembleError(f"{path}: a run that stopped early ({summary['error']}): it has its validation but no "
                            f"final fit to blend")
    missing = [name for name in (VALID_TOP, FULL_TOP) if not (path / name).is_file()]
    if missing:
        raise EnsembleError(f"{path}: not a finished run (no {', '.join(missing)}; a validate-only trial?)")
    return summary


def _check_same(names, values, what, shown=None):
    """All values equal, or an EnsembleError listing the runs per value (shown[value] in its place)."""
    runs_by_value = {}
    for name, value in zip(names, values):
        runs_by_value.setdefault(value, []).append(name)
    if len(runs_by_value) > 1:
        detail = "; ".join(f"{(shown or {}).get(value, value)} ({', '.join(runs)})"
                           for value, runs in runs_by_value.items())
        raise EnsembleError(f"the runs differ in {what}: {detail}. Blend runs made on the same prepared data.")


def _read_list(path):
    """A run's top-N file; its rows are in rank order per user."""
    top = pd.read_csv(path)
    return top.assign(rank=top.groupby("user", sort=False).cumcount())


def parse_weights(text, n_runs):
    if text == "auto":
        return "auto"
    expected = f"--weights {text!r}: expected auto or {n_runs} comma-separated numbers, one per run"
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise EnsembleError(expected) from None
    if len(weights) != n_runs:
        raise EnsembleError(f"{expected}; got {len(weights)}")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) == 0:
        raise EnsembleError(f"--weights {text!r}: weights must be non-negative and not all zero")
    return tuple(w / sum(weights) for w in weights)


def describe(method, names, weights):
    """The blend's parameters for summary.json: the priority order, or weights summing to 1."""
    if method == "priority":
        return {"priority_order": [names[m] for m in priority_order(weights)]}
    total = sum(weights)
    return {"weights": {name: w / total for name, w in zip(names, weights)}}


def as_text(parameters):
    if "priority_order" in parameters:
        return " > ".join(parameters["priority_order"])
    return ", ".join(f"{name} {w:.2f}" for name, w in parameters["weights"].items())


def full_inter_path(data_path):
    """The .inter of all interactions: its users are the users of the submission."""
    try:
        prepared = Prepared.load(data_path)
    except (OSError, ValueError, KeyError):
        prepared = None
    path = prepared and prepared.inter_path(prepared.name)
    if path is None or not path.is_file():
        raise EnsembleError(f"{data_path}: the runs' prepared data is gone or incomplete (needed for its user list)")
    return path


def training_activity(data_path, hidden):
    """The holdout users' training interactions and activity groups, as the runs' own (pipeline)."""
    try:
        return holdout_activity(Prepared.load(data_path), hidden)
    except OSError:
        raise EnsembleError(f"{data_path}: the runs' prepared data is gone or incomplete (needed for the "
                            f"users' training interactions)") from None


def compare_with_members(member_users, blend_users):
    """Each member's and the blend's recall@10 interval, and the blend minus its best member
    (paired over the same users); member_users {name: per-user scores}."""
    recall = pd.DataFrame({name: users[RECALL] for name, users in member_users.items()})
    best = recall.mean().idxmax()
    blend = "cross-fitted blend"  # a column name no run folder is likely to have
    recall[blend] = blend_users[RECALL]
    low, high = bootstrap_interval(recall.to_numpy())
    intervals = {name: [float(lo), float(hi)] for name, lo, hi in zip(recall.columns, low, high)}
    difference, lo, hi = paired_differences(recall[[best, blend]], best)[blend]
    return intervals, {"member": best, "difference": difference, "interval": [lo, hi]}


def build(run_dirs, method="rank", weights="auto", seed=0, output=None, depth=None):
    """Blend the runs, write the ensemble folder; returns its summary (with output_dir)."""
    if method not in METHODS:
        raise EnsembleError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
    if depth is not None and depth < K:
        raise EnsembleError(f"--depth {depth}: must be at least {K}")
    if len(run_dirs) < 2:
        raise EnsembleError("an ensemble needs at least two run folders")
    weights = parse_weights(weights, len(run_dirs))
    final = output_folder(f"{ENSEMBLE_MODEL}-{method}", output)
    timer = Timer()
    with timer.step("load"):
        members = load_members(run_dirs)
        data = members[0].summary["data"]
        holdout_path = Path(data["holdout_path"])
        if not holdout_path.is_file():
            raise EnsembleError(f"{holdout_path}: the runs' holdout file is gone")
        hidden = pd.read_csv(holdout_path)
        inter_path = full_inter_path(data["data_path"])
        activity = training_activity(data["data_path"], hidden)
    names = [member.name for member in members]
    with timer.step("fit"):
        result = evaluate(method, [member.valid for member in members], hidden, weights, seed, depth)
    member_users = {m.name: part_scores(m.valid, hidden) for m in members}
    blend_users = activity.join(part_scores(result["cross_fitted_lists"], hidden))
    intervals, versus_best = compare_with_members(member_users, blend_users)
    with timer.step("blend_full"):
        full_top = blender(method, [member.full for member in members], depth)(result["weights"])
        try:
            submission = submission_frame(full_top, inter_path)
        except RuntimeError as error:
            raise EnsembleError(f"the full-fit lists of {', '.join(names)}: {error}") from None
    summary = {
        "model": ENSEMBLE_MODEL,
        "method": method,
        "members": [
            {"name": m.name, "path": str(m.path.resolve()), "model": m.summary.get("model"),
             "holdout": mean_scores(member_users[m.name]), "interval": {RECALL: intervals[m.name]}}
            for m in members
        ],
        **describe(method, names, result["weights"]),
        "weights_fitted": weights == "auto",
        "holdout": result["cross_fitted"],  # the estimate not fitted to itself: what report.py shows
        "holdout_detail": holdout_detail(blend_users),
        "vs_best_member": versus_best,  # cross-fitted blend minus the member, per user; paired bootstrap
        "holdout_fitted": result["fitted"],
        "cross_fit": {
            "seed": seed,
            "pooled": "weights fitted on one half blend the other half; recall over all users",
            "halves": [{"users": len(users), **describe(method, names, w)} for users, w in result["halves"]],
        },
        "data": data,
        "config": {
            "method": method, "weights": "auto" if weights == "auto" else list(weights), "seed": seed,
            "depth": depth or DEFAULT_DEPTH[method], "rrf_offset": RRF_OFFSET, "grid_points": result["grid_points"],
            "output_dir": str(final),
        },
        "timings": timer,  # the same dict: the write step below still adds to it
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    with staged(final) as staging:
        with timer.step("write"):
            submission.to_csv(staging / SUBMISSION, index=False)
            write_holdout_users(staging, blend_users)
        (staging / SUMMARY).write_text(json_text(summary))
    return {**summary, "output_dir": str(final)}


def print_table(summary, file=None):
    file = file or sys.stdout  # looked up when called: tests and callers may replace it
    rows = [(m["name"], m["holdout"], m["interval"][RECALL]) for m in summary["members"]]
    rows += [("blend, fitted", summary["holdout_fitted"], None),
             ("blend, cross-fitted", summary["holdout"], summary["holdout_detail"]["interval"][RECALL])]
    width = max(len(name) for name, _, _ in rows) + 2
    fitted = "auto (fitted on the holdout)" if summary["weights_fitted"] else "given (nothing fitted)"
    print(f"ensemble of {len(summary['members'])} runs, method {summary['method']}, weights {fitted}", file=file)
    print(f"{'':{width}}recall@10   95% interval      ndcg@10", file=file)
    for name, scores, interval in rows:
        shown = f"{interval[0]:.4f} to {interval[1]:.4f}" if interval else ""
        print(f"{name:{width}}{scores['recall@10']:9.4f}   {shown:16} {scores['ndcg@10']:8.4f}", file=file)
    versus = summary["vs_best_member"]
    print(f"cross-fitted blend minus best member ({versus['member']}): "
          f"{describe_difference(versus['difference'], *versus['interval'])}", file=file)
    for line in describe_holdout(summary["holdout"], summary["holdout_detail"])[1:]:
        print(f"cross-fitted blend, {line}", file=file)
    label = "priority order" if summary["method"] == "priority" else "weights"
    print(f"{label}: {as_text(summary)}", file=file)
    for name, half in zip("AB", summary["cross_fit"]["halves"]):
        print(f"  fitted on half {name} ({half['users']} users): {as_text(half)}", file=file)
    print(f"submission: {summary['output_dir']}/{SUBMISSION}", file=file)


def main(argv=None):
    usage = __doc__.split("\n\n")[1]
    parser = argparse.ArgumentParser(prog="python -m recbole_ext.ensemble", usage=usage,
                                     description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished run folders (run.py outputs)")
    parser.add_argument("--method", choices=METHODS, default="rank", help="how to blend (default: rank)")
    parser.add_argument("--weights", default="auto", help="auto, or one number per run (for priority: the order)")
    parser.add_argument("--depth", type=int,
                        help="read each run's top DEPTH items (default: 10 for priority, all for rank and score)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split of holdout users for the cross-fit")
    parser.add_argument("--output", help="output folder (default: outputs/ensemble-<method>-<time>)")
    args = parser.parse_args(argv)
    try:
        summary = build(args.runs, args.method, args.weights, args.seed, args.output, args.depth)
    except (EnsembleError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
