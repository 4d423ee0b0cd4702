"""A table of every finished run and ensemble under a folder.

    python -m recbole_ext.report [OUTPUTS_DIR] [--output DIR]

Prints the table and writes report.csv, report.md and report.png into --output
(default OUTPUTS_DIR); what they show: docs/numbers.md.
Runs made on different prepared data (fingerprint) were scored on different
holdouts: they are shown in separate groups, never ranked against each other.
"""

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from atomic_data.holdout import PART_NAMES
from recbole_ext.evaluator.metrics import ACTIVITY, METRICS, NDCG, RECALL, paired_differences
from recbole_ext.utils import leaderboard_log
from recbole_ext.utils.files import write_atomic
from recbole_ext.utils.run_folder import ENSEMBLE_MODEL, SUBMISSION, SUMMARY, read_holdout_users

BREAKDOWN = (*PART_NAMES.values(), *ACTIVITY)  # holdout parts, then activity groups
INTERVAL = ["ci low", "ci high"]  # the 95% bootstrap interval of recall@10
VERSUS_BEST = ["vs best", "vs best low", "vs best high"]  # recall@10 minus the group's best run's, paired
COLUMNS = [
    "run",
    "model",
    "settings",
    RECALL,
    *INTERVAL,
    *VERSUS_BEST,
    NDCG,
    *[f"{metric} {name}" for name in BREAKDOWN for metric in METRICS],
    *leaderboard_log.SCORES,
    "seconds",
    "fingerprint",
]
# the settings worth a column, when the model has them (RecBole's final config holds a model's own keys only)
MODEL_KEYS = (
    "reg_weight",
    "side_weights",
    "latent_dimension",
    "mlp_hidden_size",
    "embedding_size",
    "hidden_size",
    "n_layers",
)
TRAINING_KEYS = ("learning_rate",)  # for models trained by epochs (not RecBole's TRADITIONAL ones)
SEQUENCE_KEYS = ("MAX_ITEM_LIST_LENGTH",)  # for sequential models


class ReportError(ValueError):
    """The folder holds nothing to report; the message says where."""


def find_summaries(root):
    """summary.json files under root of finished runs and ensembles: beside a submission.csv (validate-only tune
    trials and runs that stopped early have none), outside staging folders (names starting with a dot)."""
    found = []
    for path in sorted(Path(root).rglob(SUMMARY)):
        staged = any(part.startswith(".") for part in path.relative_to(root).parts)
        if not staged and (path.parent / SUBMISSION).is_file():
            found.append(path)
    return found


def key_settings(summary):
    """A short `key=value` text of the settings that tell runs of one model apart."""
    if summary.get("model") == ENSEMBLE_MODEL:
        members = "+".join(member["name"] for member in summary["members"])
        if "stack" in summary:
            blend = f"stack top{summary['stack']['candidates']} rounds={summary['stack']['rounds']}"
        elif "priority_order" in summary:
            blend = "order=" + ">".join(summary["priority_order"])
        else:
            blend = "weights=" + "/".join(f"{w:.2f}" for w in summary["weights"].values())
        return f"{members} {blend}"
    recbole = summary.get("config", {}).get("recbole", {})
    model_type = str(recbole.get("MODEL_TYPE", ""))
    keys = [key for key in MODEL_KEYS if key in recbole]
    if "SEQUENTIAL" in model_type:
        keys += SEQUENCE_KEYS
    if "TRADITIONAL" not in model_type:
        keys += TRAINING_KEYS
    parts = [f"{key}={str(recbole[key]).replace(' ', '')}" for key in keys if recbole.get(key) not in (None, {}, [])]
    if "TRADITIONAL" not in model_type and summary.get("epochs_run"):
        parts.append(f"epochs={summary['epochs_run']}")
    return " ".join(parts)


def report_table(root):
    """One row per run or ensemble (COLUMNS), grouped by data version, best first; and skip messages."""
    rows, skipped, folders = [], [], {}
    try:
        submitted = leaderboard_log.scores_by_run(Path(root) / leaderboard_log.LOG_FILE)
    except leaderboard_log.LeaderboardError as error:
        submitted = {}
        skipped.append(f"the leaderboard scores: {error}")
    for path in find_summaries(root):
        try:
            summary = json.loads(path.read_text())
            shared = leaderboard_log.summary_scores(summary)  # model, fingerprint, holdout scores, interval
        except (ValueError, KeyError, TypeError) as error:  # json.JSONDecodeError is a ValueError
            skipped.append(f"{path}: not a run summary ({type(error).__name__}: {error})")
            continue
        run = str(path.parent.relative_to(root)) if path.parent != Path(root) else path.parent.name
        folders[run] = path.parent
        detail = summary.get("holdout_detail", {})
        rows.append(
            {
                "run": run,
                **shared,
                "settings": key_settings(summary),
                **{
                    f"{metric} {name}": scores[metric]
                    for name, scores in {**detail.get("parts", {}), **detail.get("activity", {})}.items()
                    for metric in METRICS
                },
                **submitted.get(path.parent.resolve(), {}),
                "seconds": round(sum(summary.get("timings", {}).values()), 1),
            }
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = table.sort_values(["fingerprint", RECALL], ascending=[True, False], kind="stable")
    table = table.reset_index(drop=True)
    for _, group in groups(table):  # best first within each data version
        table.loc[group.index, VERSUS_BEST] = versus_best(group["run"], folders).to_numpy()
    return table, skipped


def versus_best(runs, folders):
    """Each run's recall@10 minus the first (best) run's, with the paired bootstrap interval over
    their common users; NaN where a run has no holdout_users.csv (older runs), 0 for the best."""
    per_user = {run: read_holdout_users(folders[run]) for run in runs}
    recall = pd.DataFrame({run: users[RECALL] for run, users in per_user.items() if users is not None})
    result = pd.DataFrame(index=runs, columns=VERSUS_BEST, dtype=float)
    best = runs.iloc[0]
    if best in recall:
        result.loc[best] = 0.0
        for run, values in paired_differences(recall.dropna(), best).items():
            result.loc[run] = values
    return result


def groups(table):
    """(fingerprint, rows) per data version, the group with the best run first."""
    version = table["fingerprint"].fillna("unknown")  # older summaries have none
    order = table.groupby(version)[RECALL].max().sort_values(ascending=False).index
    return [(fingerprint, table[version == fingerprint]) for fingerprint in order]


BREAKDOWN_NOTE = (
    f"{RECALL} / {NDCG} on each holdout part (last items, random earlier ones) and for the third "
    f"of the holdout users with the fewest ({ACTIVITY[0]}), middling ({ACTIVITY[1]}) and most "
    f"({ACTIVITY[2]}) training interactions"
)


def shown_tables(rows, table):
    """The printed forms of a group's rows: the scores, and the scores by part and activity group
    (None when no run has them). Leaderboard columns appear when any run of the table has one."""

    def number(value, form="{:.4f}"):
        return "" if pd.isna(value) else form.format(value)

    def versus(row):
        if pd.isna(row["vs best"]):
            return ""
        if row["run"] == rows["run"].iloc[0]:
            return "best"
        return f"{row['vs best']:+.4f} ({row['vs best low']:+.4f} to {row['vs best high']:+.4f})"

    scores = pd.DataFrame(
        {
            "run": rows["run"],
            "model": rows["model"],
            "settings": rows["settings"],
            RECALL: rows[RECALL].map(number),
            "95% interval": [
                f"{low:.4f} to {high:.4f}" if pd.notna(low) else ""
                for low, high in zip(rows["ci low"], rows["ci high"])
            ],
            "vs best (95% interval)": [versus(row) for _, row in rows.iterrows()],
            NDCG: rows[NDCG].map(number),
            **{name: rows[name].map(number) for name in leaderboard_log.SCORES if table[name].notna().any()},
            "seconds": rows["seconds"].map(lambda value: number(value, "{:.1f}")),
        }
    )
    present = [name for name in BREAKDOWN if rows[f"{RECALL} {name}"].notna().any()]
    if not present:
        return scores, None
    breakdown = pd.DataFrame(
        {
            "run": rows["run"],
            **{
                name: [
                    f"{recall:.4f} / {ndcg:.4f}" if pd.notna(recall) else ""
                    for recall, ndcg in zip(rows[f"{RECALL} {name}"], rows[f"{NDCG} {name}"])
                ]
                for name in present
            },
        }
    )
    return scores, breakdown


def captioned_grids(table, style, caption):
    """(caption, grid in tabulate's `style`) per table: each data version's scores, then its breakdown when any
    run has one; caption is formatted with the version's fingerprint and count of runs."""
    for fingerprint, rows in groups(table):
        scores, breakdown = shown_tables(rows, table)
        yield caption.format(fingerprint=fingerprint, runs=len(rows)), _grid(scores, style)
        if breakdown is not None:
            yield f"{BREAKDOWN_NOTE}:", _grid(breakdown, style)


def _grid(frame, style):
    return frame.to_markdown(index=False, tablefmt=style, disable_numparse=True)


def as_text(table):
    grids = captioned_grids(table, "simple", "data {fingerprint} ({runs} runs)")
    return "\n\n".join(f"{caption}\n{grid}" for caption, grid in grids)


def as_markdown(table):
    intro = (
        f"Holdout {RECALL} and {NDCG} (an ensemble's: cross-fitted) with the 95% bootstrap interval of "
        f"{RECALL}, and each run minus the best run of its table, paired over the same users; one table per "
        "data version."
    )
    grids = captioned_grids(table, "pipe", "## data {fingerprint}")
    return "\n\n".join(["# Runs", intro, *(f"{caption}\n\n{grid}" for caption, grid in grids)]) + "\n"


def bar_figure(table):
    """Recall@10 by run, best at the top; one panel per data version, each on its own x-axis (the scores of
    different holdouts are not on one scale)."""
    parts = groups(table)
    label_width = max(len(_label(run, model)) for run, model in zip(table["run"], table["model"]))
    heights = [max(len(rows), 1) for _, rows in parts]
    figure, axes = plt.subplots(
        len(parts),
        1,
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
        figsize=(6 + 0.09 * label_width, 1.2 + 0.4 * sum(heights) + 1.0 * len(parts)),
    )
    for axis, (fingerprint, rows) in zip(axes[:, 0], parts):
        rows = rows.iloc[::-1]  # barh draws from the bottom
        colours = ["tab:orange" if model.startswith(ENSEMBLE_MODEL) else "tab:blue" for model in rows["model"]]
        errors = np.nan_to_num([rows[RECALL] - rows["ci low"], rows["ci high"] - rows[RECALL]])  # none: 0
        bars = axis.barh(
            [_label(run, model) for run, model in zip(rows["run"], rows["model"])],
            rows[RECALL],
            color=colours,
            xerr=errors,
            error_kw={"elinewidth": 1, "capsize": 2},
        )
        top = np.nanmax([rows[RECALL].max(), rows["ci high"].max()])
        for bar, value, end in zip(bars, rows[RECALL], rows[RECALL] + errors[1]):  # the label after the interval
            axis.text(end + 0.01 * top, bar.get_y() + bar.get_height() / 2, f"{value:.4f}", va="center", fontsize=9)
        axis.set_xlim(0, top * 1.2)
        axis.set_title(f"data {fingerprint}", fontsize=10, loc="left")
        axis.set_xlabel("holdout Recall@10 (ensembles: cross-fitted), with its 95% interval", fontsize=9)
        axis.tick_params(axis="y", labelsize=9)
        axis.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("tab:blue", "tab:orange")]
    axes[0, 0].legend(
        handles, ["run", "ensemble"], loc="lower right", bbox_to_anchor=(1, 1), ncol=2, frameon=False, fontsize=9
    )
    figure.tight_layout()
    return figure


def _label(run, model, width=56):
    """The run's folder name, plus the model when the name does not say it; long names cut in the middle."""
    plain_model = model.replace("(", "-").rstrip(")").lower()  # ensemble(rank) -> ensemble-rank
    label = run if plain_model in run.lower() else f"{run} ({model})"
    half = (width - 1) // 2
    return label if len(label) <= width else f"{label[:half]}…{label[-half:]}"


def write_report(root, output=None):
    """Build the table, write report.csv/.md/.png; returns (table, skipped messages, output folder)."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root}: no such folder")
    table, skipped = report_table(root)
    if table.empty:
        raise ReportError(f"{root}: no finished run or ensemble (no {SUMMARY} beside a {SUBMISSION} below it)")
    output = Path(output) if output else root
    output.mkdir(parents=True, exist_ok=True)
    write_atomic(output / "report.csv", lambda path: table.to_csv(path, index=False))
    write_atomic(output / "report.md", lambda path: path.write_text(as_markdown(table)))
    figure = bar_figure(table)
    write_atomic(output / "report.png", lambda path: figure.savefig(path, dpi=120))
    plt.close(figure)
    return table, skipped, output


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_ext.report", description=__doc__.split("\n")[0])
    parser.add_argument("outputs", nargs="?", default="outputs", help="folder of run and ensemble folders")
    parser.add_argument("--output", help="where report.csv/.md/.png go (default: OUTPUTS_DIR)")
    args = parser.parse_args(argv)
    try:
        table, skipped, output = write_report(args.outputs, args.output)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for message in skipped:
        print(f"skipped {message}", file=sys.stderr)
    if table["fingerprint"].nunique(dropna=False) > 1:
        print(
            "note: runs on different data versions (fingerprints) are scored on different holdouts; "
            "compare within a group only\n"
        )
    print(as_text(table))
    print(f"\nwritten: {output / 'report.csv'}, report.md, report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
