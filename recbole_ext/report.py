"""A table of every finished run and ensemble under a folder.

    python -m recbole_ext.report [OUTPUTS_DIR] [--output DIR]

Reads the summary.json of each finished run and ensemble under OUTPUTS_DIR
(default outputs/; validate-only tune trials and runs that stopped early are
left out: they have no submission.csv), prints the table
sorted by holdout recall@10 and writes report.csv, report.md and report.png (a
bar chart of recall@10 by run) into --output (default OUTPUTS_DIR). An
ensemble's recall@10 is its cross-fitted estimate. Runs made on different
prepared data (fingerprint) were scored on different holdouts: they are shown
in separate groups, never ranked against each other.
"""

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from recbole_ext.ensemble import ENSEMBLE_MODEL  # noqa: E402
from recbole_ext.files import write_atomic  # noqa: E402
from recbole_ext.pipeline import SUBMISSION, SUMMARY  # noqa: E402

COLUMNS = ["run", "model", "settings", "recall@10", "ndcg@10", "seconds", "fingerprint"]
# the settings worth a column, when the model has them (RecBole's final config holds a model's own keys only)
MODEL_KEYS = ("reg_weight", "side_weights", "latent_dimension", "mlp_hidden_size", "embedding_size", "hidden_size",
              "n_layers")
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
        if "priority_order" in summary:
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
    parts = [f"{key}={_compact(recbole[key])}" for key in keys if recbole.get(key) not in (None, {}, [])]
    if "TRADITIONAL" not in model_type and summary.get("epochs_run"):
        parts.append(f"epochs={summary['epochs_run']}")
    return " ".join(parts)


def _compact(value):
    return str(value).replace(" ", "")


def report_table(root):
    rows, skipped = [], []
    for path in find_summaries(root):
        try:
            summary = json.loads(path.read_text())
            holdout = summary["holdout"]
            model = summary["model"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            skipped.append(f"{path}: not a run summary ({type(error).__name__}: {error})")
            continue
        rows.append({
            "run": str(path.parent.relative_to(root)) if path.parent != Path(root) else path.parent.name,
            "model": f"{ENSEMBLE_MODEL}({summary['method']})" if model == ENSEMBLE_MODEL else model,
            "settings": key_settings(summary),
            "recall@10": holdout["recall@10"],
            "ndcg@10": holdout["ndcg@10"],
            "seconds": round(sum(summary.get("timings", {}).values()), 1),
            "fingerprint": summary.get("data", {}).get("fingerprint"),
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = table.sort_values(["fingerprint", "recall@10"], ascending=[True, False], kind="stable")
    return table.reset_index(drop=True), skipped


def groups(table):
    """(fingerprint, rows) per data version, the group with the best run first."""
    order = table.groupby("fingerprint", dropna=False)["recall@10"].max().sort_values(ascending=False).index
    return [(fingerprint, table[table["fingerprint"] == fingerprint]) for fingerprint in order]


FLOAT_FORMATS = ("", "", "", ".4f", ".4f", ".1f")  # per column of COLUMNS without fingerprint


def as_text(table):
    blocks = []
    for fingerprint, rows in groups(table):
        shown = rows.drop(columns="fingerprint").to_markdown(index=False, tablefmt="simple", floatfmt=FLOAT_FORMATS)
        blocks.append(f"data {fingerprint} ({len(rows)} runs)\n{shown}")
    return "\n\n".join(blocks)


def as_markdown(table):
    blocks = ["# Runs\n", "Holdout recall@10 and ndcg@10 (an ensemble's: cross-fitted); one table per data version."]
    for fingerprint, rows in groups(table):
        shown = rows.drop(columns="fingerprint").to_markdown(index=False, floatfmt=FLOAT_FORMATS)
        blocks.append(f"\n## data {fingerprint}\n\n{shown}")
    return "\n".join(blocks) + "\n"


def bar_chart(table, path):
    figure = bar_figure(table)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def bar_figure(table):
    """Recall@10 by run, best at the top; one panel per data version, each on its own x-axis (the scores of
    different holdouts are not on one scale)."""
    parts = groups(table)
    label_width = max(len(_label(run, model)) for run, model in zip(table["run"], table["model"]))
    heights = [max(len(rows), 1) for _, rows in parts]
    figure, axes = plt.subplots(
        len(parts), 1, squeeze=False, gridspec_kw={"height_ratios": heights},
        figsize=(6 + 0.09 * label_width, 1.2 + 0.4 * sum(heights) + 1.0 * len(parts)),
    )
    for axis, (fingerprint, rows) in zip(axes[:, 0], parts):
        rows = rows.iloc[::-1]  # barh draws from the bottom
        colours = ["tab:orange" if model.startswith(ENSEMBLE_MODEL) else "tab:blue" for model in rows["model"]]
        bars = axis.barh([_label(run, model) for run, model in zip(rows["run"], rows["model"])],
                         rows["recall@10"], color=colours)
        axis.bar_label(bars, fmt="%.4f", padding=3, fontsize=9)
        axis.set_xlim(0, rows["recall@10"].max() * 1.18)
        axis.set_title(f"data {fingerprint}", fontsize=10, loc="left")
        axis.set_xlabel("holdout Recall@10 (ensembles: cross-fitted)", fontsize=9)
        axis.tick_params(axis="y", labelsize=9)
        axis.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("tab:blue", "tab:orange")]
    axes[0, 0].legend(handles, ["run", "ensemble"], loc="lower right", bbox_to_anchor=(1, 1), ncol=2,
                      frameon=False, fontsize=9)
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
    writers = {
        "report.csv": lambda path: table.to_csv(path, index=False),
        "report.md": lambda path: path.write_text(as_markdown(table)),
        "report.png": lambda path: bar_chart(table, path),
    }
    for name, write in writers.items():
        write_atomic(output / name, write)
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
        print("note: runs on different data versions (fingerprints) are scored on different holdouts; "
              "compare within a group only\n")
    print(as_text(table))
    print(f"\nwritten: {output / 'report.csv'}, report.md, report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
