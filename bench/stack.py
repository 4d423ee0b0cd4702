"""The blend's learned second stage against EASE and the simple blends, on three data sets.

    python bench/stack.py [--data embedded sample latest-small] [--sample-users 300] [--latest-small DIR]

For each data set (the embedded MovieLens-100K; its --sample-users user sample, seed 0; MovieLens
ml-latest-small, converted by atomic_data.movielens, from ../shared/data/ml-latest-small by default),
`python -m recbole_ext.blend yaml/blends/leaderboard.yaml --quick` trains the recipe's members (or
reuses them: data/bench/stack/<data>/runs), then every blend method is fitted on the same member runs:
score, rank, priority (weights cross-fitted on two halves) and stack (cross-fitted on five folds).
Printed per data set: each member and each blend, cross-fitted, with the holdout parts (last, random)
and the paired difference to EASE with its 95% interval; the stage's fit and predict seconds against
the members' training seconds; its top features by importance; how far its inputs moved between the
validation lists and the refit members' lists.

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
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import BENCH_DATA, LATEST_SMALL, ROOT, embedded_sample_raw, latest_small_raw, table

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


def measure(name, raw, label, folder):
    from recbole_ext.blend import ensemble
    from recbole_ext.evaluator.metrics import RECALL, bootstrap_interval, paired_differences
    from recbole_ext.utils.run_folder import read_holdout_users

    print(f"\n{label}", flush=True)
    runs, trained = member_runs(raw, folder)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="*", default=["embedded", "sample", "latest-small"])
    parser.add_argument("--sample-users", type=int, default=300)
    parser.add_argument("--latest-small", default=str(LATEST_SMALL))
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for name in args.data:
        raw, label = raw_folder(name, args.sample_users, args.latest_small)
        if raw is False:
            print(f"\n{label}")
            continue
        measure(name, raw, label, OUT / name)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
