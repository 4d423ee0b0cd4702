"""The blend's learned second stage against EASE and the simple blends, on three data sets.

    python bench/stack.py [--data embedded sample latest-small] [--sample-users 300] [--latest-small DIR]
                          [--reuse] [--curve]
    python bench/stack.py --scale [--members 5] [--users N] [--compare]

For each data set (the embedded MovieLens-100K; its --sample-users user sample, seed 0; MovieLens
ml-latest-small, converted by atomic_data.movielens, from ../shared/data/ml-latest-small by default),
`python -m recbole_ext.blend yaml/blends/leaderboard.yaml --quick` trains the recipe's members (or
reuses them: data/bench/stack/<data>/runs), then every blend method is fitted on the same member runs:
score, rank, priority (weights cross-fitted on two halves) and stack (cross-fitted on three folds).
Printed per data set: each member and each blend, cross-fitted, with the holdout parts (last, random)
and the paired difference to EASE with its 95% interval; the stage's fit and predict seconds against
the members' training seconds; its top features by importance; how far its inputs moved between the
validation lists and the refit members' lists.

--reuse benches the member runs already in data/bench/stack/<data>/runs, whatever settings trained them,
without the recipe (which retrains a member whose settings changed). --curve also prints the stage's
learning curve: its cross-fitted Recall@10 when each fold trains on a share of the other folds' users (the
scored users unchanged), against EASE, paired: whether the stage would gain from more holdout users.

--scale times the stage alone at competition scale: the synthetic data of atomic_data.synthetic (31,360
users, 6,807 items) and --members synthetic member lists of the real lists' shape (each user's top 50
unseen items of a score that mixes popularity, the user's taste shared by the members, each member's own
noise and, in the validation lists, a lift of the user's hidden items), since real members cannot be
trained at that scale on a CPU. It prints the stage's fit (the features, the cross-fit and the final
model) and predict seconds and peak memory; docs/results.md sets them against the members' training
seconds measured at that scale. --users N: a seeded sample of N users' lists and hidden items (to iterate
fast); --compare: also the stage's first settings (FIRST_BOOSTING, FIRST_FOLDS) on the same lists, in the same run, and
the ratio of the two.

Goals (issue 26), printed beside the figures: the stage at least EASE x 1.06 with the paired interval
above 0 on the embedded data, at least EASE x 1.03 with the interval above 0 on ml-latest-small; at least
the best simple blend on every data set (within its interval); its last part at least 0.6x the best
sequential member's; its fit and predict under 10% of the members' training time.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    BENCH_DATA,
    LATEST_SMALL,
    ROOT,
    competition_scale_raw,
    embedded_sample_raw,
    latest_small_raw,
    memory_mb,
    table,
)

RECIPE = ROOT / "yaml" / "blends" / "leaderboard.yaml"
OUT = BENCH_DATA / "stack"
QUIET = ["state=WARNING", "show_progress=false", "device=cpu"]
METHODS = ("score", "rank", "priority", "stack")
SEQUENTIAL = ("SASRec", "BERT4Rec")


def raw_folder(name, sample_users, latest_small):
    """The raw competition folder of a data set (None: the embedded default), or False when it is not here,
    and its label."""
    if name == "embedded":
        return None, "embedded MovieLens-100K (943 users)"
    if name == "sample":
        return embedded_sample_raw(sample_users), f"its {sample_users}-user sample"
    raw = latest_small_raw(latest_small)
    if raw is None:
        return False, f"MovieLens ml-latest-small is not at {latest_small} (--latest-small DIR): skipped"
    return raw, "MovieLens ml-latest-small (610 users, 9,724 films)"


def member_runs(raw, folder):
    """The quick recipe's members trained (or reused) on raw: {name: run folder}, {name: trained or reused}."""
    from recbole_ext.blend.blend import blend

    summary = blend(RECIPE, data=raw, output=folder / "blend", runs_dir=folder / "runs", quick=True, overrides=QUIET)
    members = summary["blend"]["members"]
    return {m["name"]: Path(m["path"]) for m in members if m["path"]}, {
        m["name"]: m["runs"][0]["status"] for m in members
    }


def finished_runs(folder):
    """The member runs of a previous bench in folder/runs, in the recipe's order, without training."""
    from recbole_ext.blend.recipe import read_recipe

    order = [member.name for member in read_recipe(RECIPE, quick=True).members]
    runs = {path.parent.name.rsplit("-", 1)[0]: path.parent for path in (folder / "runs").glob("*/summary.json")}
    missing = [name for name in order if name not in runs]
    if missing:
        sys.exit(f"error: --reuse: {folder / 'runs'} has no finished run of {', '.join(missing)}")
    return {name: runs[name] for name in order}, {name: "reused" for name in order}


def measure(name, raw, label, folder, reuse=False, curve=False):
    from recbole_ext.blend import ensemble
    from recbole_ext.evaluator.metrics import RECALL, bootstrap_interval, paired_differences
    from recbole_ext.utils.run_folder import read_holdout_users

    print(f"\n{label}", flush=True)
    runs, trained = finished_runs(folder) if reuse else member_runs(raw, folder)
    members = {member: json.loads((path / "summary.json").read_text()) for member, path in runs.items()}
    # each run's own timings: a reused run took its seconds when it was trained
    seconds = {member: sum(summary["timings"].values()) for member, summary in members.items()}
    scores = {member: read_holdout_users(path) for member, path in runs.items()}
    summaries = {}
    for method in METHODS:
        output = folder / f"ensemble-{method}"
        shutil.rmtree(output, ignore_errors=True)  # the last bench's
        summaries[method] = ensemble.build(list(runs.values()), method, "auto", 0, output)
        scores[f"blend {method}"] = read_holdout_users(output)
    recall = pd.DataFrame({row: frame[RECALL] for row, frame in scores.items()})
    low, high = bootstrap_interval(recall.to_numpy())
    versus = paired_differences(recall, "EASE")
    ease = recall["EASE"].mean()
    rows = []
    for i, row in enumerate(recall.columns):
        frame = scores[row]
        difference = versus.get(row)
        rows.append(
            (
                row,
                f"{recall[row].mean():.4f}",
                f"{low[i]:.4f} to {high[i]:.4f}",
                f"{frame[f'{RECALL} last'].mean():.4f}",
                f"{frame[f'{RECALL} random'].mean():.4f}",
                f"{difference[0]:+.4f} ({difference[1]:+.4f} to {difference[2]:+.4f})" if difference else "",
                f"{recall[row].mean() / ease:.3f}",
                f"{seconds[row]:.0f} ({trained[row]})" if row in seconds else "",
            )
        )
    header = ("member / blend (cross-fitted)", "recall@10", "95% interval", "last", "random", "minus EASE (paired)")
    print(table(rows, (*header, "x EASE", "training s")))
    report_stage(name, summaries, recall, scores, members, seconds)
    if curve:
        learning_curve(runs)


CURVE_SHARES = (0.125, 0.25, 0.5, 1.0)
CURVE_SEEDS = (0, 1, 2)


def taught_share(share, seed):
    """stack.cross_fit's teach: a seeded draw of this share of each fold's training users."""
    rng = np.random.default_rng(seed)
    return lambda fold, others: rng.choice(others, max(1, round(share * len(others))), replace=False)


def learning_curve(runs):
    """The stage's cross-fitted Recall@10 when each fold's model trains on a share of the other folds' users
    (drawn anew per fold and seed; the scored folds and the features unchanged), each user's recall averaged
    over the stage seeds, against the first member (the recipe's EASE) paired; runs: {member: run folder}."""
    from recbole_ext.blend import stack, stack_features
    from recbole_ext.blend.members import load_members, load_prepared
    from recbole_ext.evaluator.metrics import RECALL, paired_differences, part_scores

    members = load_members(list(runs.values()))
    data = members[0].summary["data"]
    hidden = pd.read_csv(data["holdout_path"])
    prepared = load_prepared(data["data_path"])
    ctx = stack_features.fit_context(prepared, prepared.valid_name)
    options, boosting = stack.Options(), stack.Boosting()
    groups = stack_features.feature_groups(options, stack_features.item_fields(prepared))
    lists, names = [m.valid for m in members], [m.name for m in members]
    candidates, x, labels, weights = stack.labelled(lists, names, hidden, ctx, options, groups)
    data = stack.binned(x, labels, candidates["user"].to_numpy(), weights, 0, boosting)
    first = next(iter(runs))  # the recipe's first member, EASE
    recall = {first: part_scores(lists[0], hidden)[RECALL]}
    for share in CURVE_SHARES:
        per_seed = []
        for seed in CURVE_SEEDS:
            teach = taught_share(share, seed)
            predictions, _ = stack.cross_fit(candidates, x, data, hidden, options.folds, seed, boosting, teach)
            per_seed.append(part_scores(stack.ranked(candidates, predictions), hidden)[RECALL])
        recall[share] = sum(per_seed) / len(per_seed)
    recall = pd.DataFrame(recall)
    versus = paired_differences(recall, first)
    taught = hidden["user"].nunique() * (options.folds - 1) / options.folds
    rows = [(first, "", f"{recall[first].mean():.4f}", "", "1.000")]
    for share in CURVE_SHARES:
        difference = versus[share]
        rows.append(
            (
                f"stage, {share:g} of the training users",
                f"{share * taught:.0f}",
                f"{recall[share].mean():.4f}",
                f"{difference[0]:+.4f} ({difference[1]:+.4f} to {difference[2]:+.4f})",
                f"{recall[share].mean() / recall[first].mean():.3f}",
            )
        )
    print(f"learning curve (stage seeds {', '.join(map(str, CURVE_SEEDS))}, each user's recall averaged):")
    print(table(rows, ("cross-fitted", "users per fold", "recall@10", f"minus {first} (paired)", f"x {first}")))


def report_stage(name, summaries, recall, scores, members, seconds):
    from recbole_ext.blend import ensemble
    from recbole_ext.evaluator.metrics import RECALL, paired_differences

    stage = summaries["stack"]
    record = stage["stack"]
    simple = max(("score", "rank", "priority"), key=lambda m: recall[f"blend {m}"].mean())
    versus_simple = paired_differences(recall[[f"blend {simple}", "blend stack"]], f"blend {simple}")["blend stack"]
    versus_ease = paired_differences(recall[["EASE", "blend stack"]], "EASE")["blend stack"]
    ratio = recall["blend stack"].mean() / recall["EASE"].mean()
    sequential = [m for m, s in members.items() if s["model"] in SEQUENTIAL]
    best_last = max(scores[m][f"{RECALL} last"].mean() for m in sequential) if sequential else float("nan")
    stage_last = scores["blend stack"][f"{RECALL} last"].mean()
    stage_seconds = stage["timings"]["fit stack"] + stage["timings"]["blend_full"]
    training = sum(seconds.values())
    goal_ratio = {"embedded": 1.06, "latest-small": 1.03}.get(name)
    print(
        f"stage: {ensemble.as_text(stage)}; {record['candidates_per_user']:.0f} candidates per user hold "
        f"{record['hidden_in_candidates']:.1%} of the hidden items"
    )
    if goal_ratio:
        met = ratio >= goal_ratio and versus_ease[1] > 0
        print(
            f"  goal stage >= EASE x {goal_ratio} with the interval above 0: x {ratio:.3f}, "
            f"{versus_ease[0]:+.4f} ({versus_ease[1]:+.4f} to {versus_ease[2]:+.4f}): {'met' if met else 'MISSED'}"
        )
    print(
        f"  goal stage >= the best simple blend ({simple}) within its interval: {versus_simple[0]:+.4f} "
        f"({versus_simple[1]:+.4f} to {versus_simple[2]:+.4f}): {'met' if versus_simple[2] >= 0 else 'MISSED'}"
    )
    print(
        f"  goal last part >= 0.6x the best sequential member's: {stage_last:.4f} against {best_last:.4f} "
        f"({stage_last / best_last:.2f}x): {'met' if stage_last >= 0.6 * best_last else 'MISSED'}"
    )
    print(
        f"  goal fit and predict < 10% of the members' training: {stage_seconds:.1f} s against {training:.0f} s "
        f"({stage_seconds / training:.1%}): {'met' if stage_seconds < 0.1 * training else 'MISSED'}"
    )
    print("  top features (gain share): " + ", ".join(f"{f} {s:.2f}" for f, s in record["importance"].items()))
    shifts = ", ".join(f"{f} {v:.3f} -> {w:.3f}" for f, (v, w) in list(record["refit_shift"].items())[:6])
    print(f"  feature means, validation -> refit lists: {shifts}")


# --- the stage's time at competition scale, on synthetic member lists ---

SCALE_DEPTH = 50  # each synthetic member's list: as deep as a run's valid_top50.csv
TASTE_NOISE, MEMBER_NOISE, HIDDEN_LIFT = 1.0, 0.7, 1.5  # score = log popularity + taste + own noise (+ lift)
CHUNK_USERS = 2048
# the stage as issue 26 first merged it: every fold ran to the 500-round cap at competition scale
FIRST_BOOSTING, FIRST_FOLDS = dict(learning_rate=0.05, early_stop_rounds=50), 5


def synthetic_lists(ctx, seen, hidden, members, seed):
    """members frames (user, item, score, rank) of each user's top SCALE_DEPTH unseen items; seen: users x items
    csr of the fit's interactions (ctx's codes); hidden: users x items csr of the items to lift (or None)."""
    import torch

    rng = np.random.default_rng(seed)
    base = np.log(ctx.popularity + 1e-4).astype(np.float32)
    parts = [[] for _ in range(members)]
    for start in range(0, len(ctx.users), CHUNK_USERS):
        rows = slice(start, min(start + CHUNK_USERS, len(ctx.users)))
        n = rows.stop - rows.start
        shared = base + TASTE_NOISE * rng.standard_normal((n, len(base)), np.float32)
        if hidden is not None:
            shared += HIDDEN_LIFT * hidden[rows].toarray()
        shared[seen[rows].toarray() > 0] = -np.inf
        for m in range(members):
            scores = torch.from_numpy(shared + MEMBER_NOISE * rng.standard_normal((n, len(base)), np.float32))
            values, items = torch.topk(scores, SCALE_DEPTH, dim=1)
            parts[m].append(
                pd.DataFrame(
                    {
                        "user": np.repeat(ctx.users[rows].to_numpy(), SCALE_DEPTH),
                        "item": ctx.items[items.numpy().ravel()],
                        "score": values.numpy().ravel(),
                        "rank": np.tile(np.arange(SCALE_DEPTH), n),
                    }
                )
            )
    return [pd.concat(part, ignore_index=True) for part in parts]


def user_items(ctx, users, items):
    """A users x items csr (ctx's codes) of these (user, item) pairs."""
    from scipy import sparse

    u, i = ctx.users.get_indexer(users), ctx.items.get_indexer(items)
    keep = (u >= 0) & (i >= 0)
    shape = (len(ctx.users), len(ctx.items))
    return sparse.csr_matrix((np.ones(keep.sum(), np.float32), (u[keep], i[keep])), shape=shape)


def scale(members, users=None, compare=False):
    """The stage's fit and predict seconds at competition scale, on synthetic member lists (of a sample of users,
    seed 0, when given; with the stage's first settings beside when compare)."""
    from atomic_data import HoldoutRule, base_settings, prepare
    from atomic_data.tables import read_inter
    from recbole_ext.blend import stack, stack_features

    settings = base_settings()
    prepared = prepare(
        competition_scale_raw(), BENCH_DATA / "prepared", settings["dataset"], HoldoutRule(**settings["holdout"])
    )
    hidden = pd.read_csv(prepared.holdout_path)
    names = [f"member{m + 1}" for m in range(members)]
    print(
        f"\nsynthetic competition scale: {prepared.counts['users']:,} users, {prepared.counts['items']:,} items, {members} members"
    )

    started = time.perf_counter()
    valid_ctx = stack_features.fit_context(prepared, prepared.valid_name)
    context_seconds = time.perf_counter() - started
    full_ctx = stack_features.fit_context(prepared, prepared.name)
    lists = {}
    for which, ctx, lift in (("valid", valid_ctx, hidden), ("full", full_ctx, None)):
        seen = user_items(
            ctx, *read_inter(prepared.inter_path(prepared.name if which == "full" else prepared.valid_name))[:2]
        )
        lifted = None if lift is None else user_items(ctx, lift["user"], lift["item"])
        lists[which] = synthetic_lists(ctx, seen, lifted, members, seed=len(which))
    if users and users < hidden["user"].nunique():
        kept = np.random.default_rng(0).choice(np.unique(hidden["user"]), users, replace=False)
        hidden = hidden[hidden["user"].isin(kept)]
        lists = {which: [top[top["user"].isin(kept)] for top in tops] for which, tops in lists.items()}
        print(f"a sample of {users:,} users")
    groups = stack_features.feature_groups(stack.Options(), stack_features.item_fields(prepared))

    def timed(label, options, boosting):
        memory_mb()  # the peak so far: the data and the lists
        Path("/proc/self/clear_refs").write_text("5")
        started = time.perf_counter()
        record = stack.evaluate(lists["valid"], names, hidden, valid_ctx, options, groups, boosting=boosting)
        fit_seconds = time.perf_counter() - started + context_seconds
        started = time.perf_counter()
        record["stage"].predict(lists["full"], full_ctx)
        predict_seconds = time.perf_counter() - started
        print(
            f"{label}: fit {fit_seconds:.1f} s (context {context_seconds:.1f} s, {options.folds} folds of rounds "
            f"{[f['rounds'] for f in record['folds']]} and the final model of {record['stage'].rounds}), predict "
            f"{predict_seconds:.1f} s, peak {memory_mb()[1]:,.0f} MB; cross-fitted recall@10 "
            f"{record['cross_fitted']['recall@10']:.4f}; {record['candidates_per_user']:.0f} candidates per user "
            f"holding {record['hidden_in_candidates']:.1%} of the hidden items; {len(record['importance'])} features",
            flush=True,
        )
        return fit_seconds, predict_seconds

    now_boosting = stack.Boosting()
    now = timed(
        f"the stage (learning rate {now_boosting.learning_rate}, early stop {now_boosting.early_stop_rounds} rounds)",
        stack.Options(),
        now_boosting,
    )
    if compare:
        first = stack.Boosting(**FIRST_BOOSTING)
        before = timed(
            f"its first settings (learning rate {first.learning_rate}, early stop {first.early_stop_rounds} rounds, "
            f"{FIRST_FOLDS} folds)",
            stack.Options(folds=FIRST_FOLDS, bags=1),
            first,
        )
        print(f"first settings / now: fit {before[0] / now[0]:.2f}x, predict {before[1] / now[1]:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="*", default=["embedded", "sample", "latest-small"])
    parser.add_argument("--sample-users", type=int, default=300)
    parser.add_argument("--latest-small", default=str(LATEST_SMALL))
    parser.add_argument("--scale", action="store_true", help="time the stage alone at competition scale")
    parser.add_argument("--members", type=int, default=5, help="--scale: synthetic members")
    parser.add_argument("--users", type=int, help="--scale: a sample of this many users (default: all)")
    parser.add_argument("--compare", action="store_true", help="--scale: also time the first settings, same run")
    parser.add_argument("--reuse", action="store_true", help="bench the member runs already here, train none")
    parser.add_argument("--curve", action="store_true", help="also the stage's learning curve over its users")
    args = parser.parse_args()
    if args.members < 2:
        parser.error(f"--members must be at least 2 (a blend), got {args.members}")
    if args.users is not None and args.users < 100:
        parser.error(f"--users must be at least 100 (a few per fold), got {args.users}")
    if args.scale and (args.reuse or args.curve):
        parser.error("--reuse and --curve bench the data sets' member runs, not --scale's synthetic lists")
    if not args.scale and (args.users is not None or args.compare):
        parser.error("--users and --compare apply to --scale only")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if args.scale:
        scale(args.members, args.users, args.compare)
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")
        return
    for name in args.data:
        raw, label = raw_folder(name, args.sample_users, args.latest_small)
        if raw is False:
            print(f"\n{label}")
            continue
        measure(name, raw, label, OUT / name, args.reuse, args.curve)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
