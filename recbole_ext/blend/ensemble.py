"""A blend of finished runs: build() fuses their lists, estimates the blend on the holdout without fitting
it to itself (cross-fitted), and writes its folder; print_table shows it. Its command line:
recbole_ext/ensemble.py; what is printed and written: docs/blends.md; the maths: fusion.py (priority,
rank, score) and stack.py (the learned second stage). What the docs leave out: ties of fused scores
go to the best rank in any run, then the item id; the weight grid gets coarser beyond 4 runs, and its
ties go to the higher ndcg@10, then the earlier grid point (more weight on the runs listed first).
"""

import datetime
import math
import sys

import pandas as pd

from recbole_ext.blend import stack, stack_features
from recbole_ext.blend.fusion import (
    DEFAULT_DEPTH,
    METHODS,
    RRF_OFFSET,
    EnsembleError,
    blender,
    evaluate,
    priority_order,
)
from recbole_ext.blend.members import load_members, load_prepared
from recbole_ext.evaluator.metrics import (
    COMPETITION,
    RECALL,
    K,
    bootstrap_interval,
    describe_difference,
    describe_holdout,
    holdout_detail,
    mean_scores,
    paired_differences,
    part_scores,
)
from recbole_ext.evaluator.slots import measurable
from recbole_ext.utils.files import json_text, staged
from recbole_ext.utils.run_folder import (
    ENSEMBLE_MODEL,
    SUBMISSION,
    SUMMARY,
    Timer,
    holdout_activity,
    output_folder,
    submission_frame,
    write_holdout_users,
)

STACK, AUTO = "stack", "auto"
BLEND_METHODS = (*METHODS, STACK, AUTO)  # auto: the best of the others by the cross-fitted estimate
AUTO_ORDER = ("score", "rank", "priority", STACK)  # auto's ties go to the earlier (the simpler) method
IMPORTANCE_SHOWN = 12  # features listed in summary.json and the table


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
    """The blend's parameters for summary.json: the priority order, or weights summing to 1 (a stage has
    neither: its own record says what it learned)."""
    if method == STACK:
        return {}
    if method == "priority":
        return {"priority_order": [names[m] for m in priority_order(weights)]}
    total = sum(weights)
    return {"weights": {name: w / total for name, w in zip(names, weights)}}


def as_text(parameters):
    if STACK in parameters:
        record = parameters[STACK]
        top = ", ".join(list(record["importance"])[:3])
        return (
            f"second stage, {len(record['rounds'])} LightGBM models averaged ({', '.join(map(str, record['rounds']))} "
            "rounds) on the members' top "
            f"{record['candidates']} (top features: {top})"
        )
    if "priority_order" in parameters:
        return " > ".join(parameters["priority_order"])
    return ", ".join(f"{name} {w:.2f}" for name, w in parameters["weights"].items())


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


def build(
    run_dirs, method="rank", weights="auto", seed=0, output=None, depth=None, options=None, objective=COMPETITION
):
    """Blend the runs, write the ensemble folder; returns its summary (with output_dir).
    options: stack.Options of the second stage (method stack or auto); objective: what the weights, the
    stage's labels and auto's choice maximise (metrics.Objective, resolved: a share, not `calibrated`)."""
    options = options or stack.Options()
    if method not in BLEND_METHODS:
        raise EnsembleError(f"--method {method!r}: expected one of {', '.join(BLEND_METHODS)}")
    if depth is not None and depth < K:
        raise EnsembleError(f"--depth {depth}: must be at least {K}")
    if len(run_dirs) < 2:
        raise EnsembleError("an ensemble needs at least two run folders")
    weights = parse_weights(weights, len(run_dirs))
    if method in (STACK, AUTO):
        options.check()
        if weights != "auto":
            raise EnsembleError(f"--method {method} fits its own blend: use --weights auto")
    final = output_folder(f"{ENSEMBLE_MODEL}-{method}", output)
    timer = Timer()
    with timer.step("load"):
        members = load_members(run_dirs)
        data = members[0].summary["data"]
        hidden = pd.read_csv(data["holdout_path"])  # load_members checked that it exists
        prepared = load_prepared(data["data_path"])
        activity = holdout_activity(prepared, hidden)  # the users' training interactions, as the runs' own
        objective, line = measurable(objective, members[0].summary.get("config", {}).get("holdout"))
        if line:
            print(line, file=sys.stderr)
        groups = (
            stack_features.feature_groups(options, stack_features.item_fields(prepared))
            if method in (STACK, AUTO)
            else None
        )
    names = [member.name for member in members]
    valid = [member.valid for member in members]
    fits = {}
    for candidate in AUTO_ORDER if method == AUTO else (method,):
        with timer.step(f"fit {candidate}"):
            if candidate == STACK:
                context = stack_features.fit_context(prepared, prepared.valid_name)
                fits[STACK] = stack.evaluate(valid, names, hidden, context, options, groups, seed, objective)
            else:
                fits[candidate] = evaluate(candidate, valid, hidden, weights, seed, depth, objective)
    chosen = max(fits, key=lambda m: fits[m]["cross_fitted"][objective.name])  # ties: the earlier (AUTO_ORDER)
    result = fits[chosen]
    member_users = {m.name: part_scores(m.valid, hidden) for m in members}
    blend_users = activity.join(part_scores(result["cross_fitted_lists"], hidden))
    intervals, versus_best = compare_with_members(member_users, blend_users)
    with timer.step("blend_full"):
        full_lists = [member.full for member in members]
        if chosen == STACK:
            full_top, full_means = result["stage"].predict(
                full_lists, stack_features.fit_context(prepared, prepared.name)
            )
        else:
            full_top = blender(chosen, full_lists, depth)(result["weights"])
        try:
            submission = submission_frame(full_top, prepared.inter_path(prepared.name))
        except RuntimeError as error:
            raise EnsembleError(f"the full-fit lists of {', '.join(names)}: {error}") from None
    summary = {
        "model": ENSEMBLE_MODEL,
        "method": chosen,
        "members": [
            {
                "name": m.name,
                "path": str(m.path.resolve()),
                "model": m.summary.get("model"),
                "holdout": mean_scores(member_users[m.name]),
                "interval": {RECALL: intervals[m.name]},
            }
            for m in members
        ],
        **describe(chosen, names, result.get("weights")),
        "weights_fitted": weights == "auto",
        "holdout": result["cross_fitted"],  # the estimate not fitted to itself: what report.py shows
        "holdout_detail": holdout_detail(blend_users),
        "vs_best_member": versus_best,  # cross-fitted blend minus the member, per user; paired bootstrap
        "holdout_fitted": result["fitted"],
        "cross_fit": cross_fit_record(chosen, result, names, seed),
        "data": data,
        "config": {
            "method": method,
            "weights": "auto" if weights == "auto" else list(weights),
            "seed": seed,
            "objective": objective.name,
            "depth": depth or DEFAULT_DEPTH.get(chosen),
            "rrf_offset": RRF_OFFSET,
            "grid_points": result.get("grid_points"),
            **(
                {
                    STACK: {
                        "candidates": options.candidates,
                        "folds": options.folds,
                        "bags": options.bags,
                        "features": groups,
                    }
                }
                if groups
                else {}
            ),
            "output_dir": str(final),
        },
        "timings": timer,  # the same dict: the write step below still adds to it
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if chosen == STACK:
        summary[STACK] = stack_record(result, full_means)
    if method == AUTO:
        summary["choice"] = choice_record(fits, hidden, chosen)
    with staged(final) as staging:
        with timer.step("write"):
            submission.to_csv(staging / SUBMISSION, index=False)
            write_holdout_users(staging, blend_users)
        (staging / SUMMARY).write_text(json_text(summary))
    return {**summary, "output_dir": str(final)}


def cross_fit_record(method, result, names, seed):
    if method == STACK:
        return {
            "seed": seed,
            "pooled": "a stage trained on the other folds' users ranks each fold's users; recall over all users",
            "folds": result["folds"],
        }
    return {
        "seed": seed,
        "pooled": "weights fitted on one half blend the other half; recall over all users",
        "halves": [{"users": len(users), **describe(method, names, w)} for users, w in result["halves"]],
    }


def stack_record(result, full_means):
    """What summary.json keeps of the stage: its settings, what it learned, how its inputs moved at the refit."""
    stage = result["stage"]
    importance = result["importance"].head(IMPORTANCE_SHOWN)
    valid_means = result["feature_means"]
    return {
        "candidates": stage.options.candidates,
        "features": stage.groups,
        "rounds": stage.rounds,
        "candidates_per_user": round(result["candidates_per_user"], 1),
        "hidden_in_candidates": round(result["hidden_in_candidates"], 4),  # the recall its candidates allow
        "importance": {name: round(float(share), 4) for name, share in importance.items()},
        # each feature's mean over the validation candidates and over the refit members' (the submission's)
        "refit_shift": {
            name: [round(float(valid_means[name]), 4), round(float(full_means[name]), 4)] for name in importance.index
        },
    }


def choice_record(fits, hidden, chosen):
    """auto: each method's cross-fitted recall@10 and the chosen one minus each other (paired, per user)."""
    users = pd.DataFrame({m: part_scores(fit["cross_fitted_lists"], hidden)[RECALL] for m, fit in fits.items()})
    differences = paired_differences(users, chosen)
    return {
        "chosen": chosen,
        "cross_fitted": {m: fit["cross_fitted"][RECALL] for m, fit in fits.items()},
        "chosen_minus": {m: {"difference": -d, "interval": [-hi, -lo]} for m, (d, lo, hi) in differences.items()},
    }


def print_table(summary, file=None):
    file = file or sys.stdout  # looked up when called: tests and callers may replace it
    rows = [(m["name"], m["holdout"], m["interval"][RECALL]) for m in summary["members"]]
    rows += [
        ("blend, fitted", summary["holdout_fitted"], None),
        ("blend, cross-fitted", summary["holdout"], summary["holdout_detail"]["interval"][RECALL]),
    ]
    width = max(len(name) for name, _, _ in rows) + 2
    fitted = "weights auto (fitted on the holdout)" if summary["weights_fitted"] else "weights given (nothing fitted)"
    fitted = "a ranker trained on the holdout" if summary["method"] == STACK else fitted
    print(f"ensemble of {len(summary['members'])} runs, method {summary['method']}, {fitted}", file=file)
    objective = summary["config"].get("objective", RECALL)
    if objective != RECALL:
        print(f"chosen for {objective}: cross-fitted {summary['holdout'][objective]:.4f}", file=file)
    print(f"{'':{width}}recall@10   95% interval      ndcg@10", file=file)
    for name, scores, interval in rows:
        shown = f"{interval[0]:.4f} to {interval[1]:.4f}" if interval else ""
        print(f"{name:{width}}{scores['recall@10']:9.4f}   {shown:16} {scores['ndcg@10']:8.4f}", file=file)
    versus = summary["vs_best_member"]
    print(
        f"cross-fitted blend minus best member ({versus['member']}): "
        f"{describe_difference(versus['difference'], *versus['interval'])}",
        file=file,
    )
    for line in describe_holdout(summary["holdout"], summary["holdout_detail"])[1:]:
        print(f"cross-fitted blend, {line}", file=file)
    if "choice" in summary:
        choice = summary["choice"]
        others = ", ".join(
            f"{m} {describe_difference(d['difference'], *d['interval'])}" for m, d in choice["chosen_minus"].items()
        )
        scores = ", ".join(f"{m} {value:.4f}" for m, value in choice["cross_fitted"].items())
        print(f"method auto: cross-fitted recall@10 {scores}; chose {choice['chosen']}", file=file)
        print(f"  {choice['chosen']} minus {others}", file=file)
    if summary["method"] == STACK:
        record = summary[STACK]
        print(f"blend: {as_text(summary)}", file=file)
        print(
            f"  {record['candidates_per_user']:.0f} candidates per user hold {record['hidden_in_candidates']:.1%} "
            "of the hidden items; feature importance (gain): "
            + ", ".join(f"{name} {share:.2f}" for name, share in record["importance"].items()),
            file=file,
        )
        folds = summary["cross_fit"]["folds"]
        rounds = ", ".join(f"{fold['rounds']} ({fold['users']} users)" for fold in folds if fold["bag"] == 0)
        print(f"  rounds chosen in each fold (the first of {folds[-1]['bag'] + 1} bags): {rounds}", file=file)
    else:
        label = "priority order" if summary["method"] == "priority" else "weights"
        print(f"{label}: {as_text(summary)}", file=file)
        for name, half in zip("AB", summary["cross_fit"]["halves"]):
            print(f"  fitted on half {name} ({half['users']} users): {as_text(half)}", file=file)
    print(f"submission: {summary['output_dir']}/{SUBMISSION}", file=file)
