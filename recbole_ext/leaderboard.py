"""A log of submitted runs: their leaderboard scores next to their holdout scores.

    python -m recbole_ext.leaderboard add RUN_DIR --public SCORE [--private SCORE] [--outputs DIR] [--replace]
    python -m recbole_ext.leaderboard [--outputs DIR]

`add` records a submitted run with its holdout scores (all users and by part)
in DIR/leaderboard.csv; without a command, it judges per data version whether
the holdout ranks the submissions like the leaderboard and estimates the
board's share of latest items (calibration.py; DIR/leaderboard.json), see
docs/numbers.md.
"""

import argparse
import datetime
import itertools
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from recbole_ext import calibration
from recbole_ext.ensemble import ENSEMBLE_MODEL
from recbole_ext.files import json_text, write_atomic
from recbole_ext.metrics import NDCG, RECALL
from recbole_ext.run_folder import SUBMISSION, SUMMARY, read_holdout_users

LOG_FILE = "leaderboard.csv"
PLOT_FILE = "leaderboard.png"
ESTIMATE_FILE = calibration.ESTIMATE_FILE.name
SCORES = ("public", "private")
PART_COLUMNS = [calibration.LAST, calibration.RANDOM]  # absent from logs written before they were recorded
LOG_COLUMNS = ["run", "model", "fingerprint", RECALL, "ci low", "ci high", NDCG, *SCORES, "recorded", *PART_COLUMNS]
MIN_SUBMISSIONS = 3  # fewer cannot show an order
# Spearman correlations: from AGREES up the local split ranks like the leaderboard, below ROUGHLY it does not
AGREES, ROUGHLY = 0.8, 0.4


class LeaderboardError(ValueError):
    """Bad input or a log that cannot be read; the message says which."""


# --- the log ---


def read_log(path):
    """The recorded submissions (LOG_COLUMNS), empty when nothing is recorded yet."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=LOG_COLUMNS)
    try:
        log = pd.read_csv(path, dtype=str)  # numbers checked below, each bad cell named as written
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise LeaderboardError(f"{path}: not a leaderboard log ({type(error).__name__})") from None
    missing = [column for column in LOG_COLUMNS if column not in log and column not in PART_COLUMNS]
    if missing:
        raise LeaderboardError(f"{path}: not a leaderboard log (no column {', '.join(missing)})")
    log = log.reindex(columns=LOG_COLUMNS)
    for column in (RECALL, "ci low", "ci high", NDCG, *SCORES, *PART_COLUMNS):  # a hand-edited log: all checked
        log[column] = _checked_numbers(log[column], column, path, required=column in (RECALL, "public"))
    return log[LOG_COLUMNS]


def _checked_numbers(values, column, path, required):
    """A column of the log as numbers from 0 to 1 (empty where allowed); a bad cell names its line."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = (numbers.isna() & (values.notna() | required)) | ~numbers.between(0, 1) & numbers.notna()
    if bad.any():
        index = bad.to_numpy().argmax()
        shown = "empty" if pd.isna(values.iloc[index]) else repr(str(values.iloc[index]))
        raise LeaderboardError(
            f"{path}:{index + 2}: {column} is {shown}, expected a Recall@10 or NDCG@10, a number from 0 to 1"
        )  # line 1 is the header
    return numbers.astype(float)


def scores_by_run(path):
    """{run folder: {"public": x, "private": y}} of the log (the scores recorded), for the report."""
    log = read_log(path)
    return {Path(row["run"]): {name: row[name] for name in SCORES if pd.notna(row[name])} for _, row in log.iterrows()}


def parse_score(text, name):
    """A leaderboard score: a number in [0, 1] (the competition's Recall@10)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 <= value <= 1:  # also NaN
        raise LeaderboardError(f"--{name} {text}: a leaderboard score is a Recall@10, a number from 0 to 1")
    return value


def summary_scores(summary):
    """A run's model (`ensemble(<method>)` for a blend, whose holdout score is cross-fitted), data fingerprint,
    holdout scores and recall@10 interval, from its summary.json: the columns the log and the report share."""
    model, holdout = summary["model"], summary["holdout"]
    detail = summary.get("holdout_detail", {})
    low, high = detail.get("interval", {}).get(RECALL, [math.nan, math.nan])
    parts = detail.get("parts", {})
    return {
        "model": f"{ENSEMBLE_MODEL}({summary.get('method')})" if model == ENSEMBLE_MODEL else model,
        "fingerprint": summary.get("data", {}).get("fingerprint"),
        RECALL: holdout[RECALL],
        "ci low": low,
        "ci high": high,
        NDCG: holdout[NDCG],
        **{column: parts.get(column.split(" ")[1], {}).get(RECALL, math.nan) for column in PART_COLUMNS},
    }


def submission_row(run_dir):
    """The log's row of a finished run folder, without its leaderboard scores."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LeaderboardError(f"{run_dir}: no such run folder")
    try:
        row = {"run": str(run_dir.resolve()), **summary_scores(json.loads((run_dir / SUMMARY).read_text()))}
    except FileNotFoundError:
        raise LeaderboardError(f"{run_dir}: not a finished run (no {SUMMARY})") from None
    except (ValueError, KeyError, TypeError):  # json.JSONDecodeError is a ValueError
        raise LeaderboardError(f"{run_dir / SUMMARY}: not a run summary (no holdout scores)") from None
    if not (run_dir / SUBMISSION).is_file():  # a stopped run (.interrupted, .failed) or a tune trial
        raise LeaderboardError(
            f"{run_dir}: not a submitted run (no {SUBMISSION}); record the run, ensemble or best/ folder that wrote it"
        )
    return row


def add(run_dir, public, private=None, outputs="outputs", replace=False):
    """Record a submitted run with its leaderboard scores; returns its row."""
    scores = {
        "public": parse_score(public, "public"),
        "private": math.nan if private is None else parse_score(private, "private"),
    }
    row = {**submission_row(run_dir), **scores, "recorded": datetime.datetime.now().isoformat(timespec="seconds")}
    path = Path(outputs) / LOG_FILE
    log = read_log(path)
    earlier = log["run"] == row["run"]
    if earlier.any() and not replace:
        before = log[earlier].iloc[0]
        shown = ", ".join(f"{name} {before[name]:.4f}" for name in SCORES if pd.notna(before[name]))
        raise LeaderboardError(f"{run_dir} is recorded already ({shown}) in {path}; add --replace to change its scores")
    log = pd.DataFrame([*log[~earlier].to_dict("records"), row], columns=LOG_COLUMNS)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: log.to_csv(tmp, index=False))
    return row


# --- how well the holdout ranks the submissions ---


def agreement(local, board):
    """(Spearman rank correlation, pairs in the same order, pairs compared) of two scores of the
    same submissions; pairs tied in either are not compared. Spearman is NaN when one side is all tied."""
    tied = local.nunique() < 2 or board.nunique() < 2  # no order on that side: nothing to correlate
    rho = math.nan if tied else local.rank().corr(board.rank())  # Spearman: the correlation of the ranks
    same = compared = 0
    for i, j in itertools.combinations(range(len(local)), 2):
        order = (local.iloc[i] - local.iloc[j]) * (board.iloc[i] - board.iloc[j])
        if order != 0:
            compared += 1
            same += order > 0
    return rho, same, compared


def verdict(local, board, board_name):
    """What the holdout's ranking says about the leaderboard's, in words."""
    n = len(local)
    if n < MIN_SUBMISSIONS:
        return (
            f"{board_name}: {n} submission{'s' * (n != 1)} with a score; too few to tell "
            f"(record at least {MIN_SUBMISSIONS})"
        )
    rho, same, compared = agreement(local, board)
    if pd.isna(rho):
        side = f"holdout {RECALL}" if local.nunique() < 2 else f"{board_name} score"
        return (
            f"{board_name}: the {n} submissions have the same {side}; "
            "it puts them in no order, so there is no ranking to compare"
        )
    facts = f"Spearman {rho:+.2f}, {same} of {compared} pairs in the same order"
    rho = round(rho, 6)  # computed 0.8 can be 0.79999...
    if rho >= AGREES:
        words = (
            "the holdout ranks submissions the way the leaderboard does: "
            "trust local comparisons of differences this size"
        )
    elif rho >= ROUGHLY:
        words = (
            "the holdout roughly agrees with the leaderboard but swaps some submissions: "
            "treat small local differences as noise"
        )
    else:
        words = (
            "the holdout does not rank submissions the way the leaderboard does: local gains "
            "do not carry over; check the holdout settings before tuning further on it"
        )
    return f"{board_name} ({facts}): {words}"


def listing(log):
    """[(fingerprint, rows as printed, verdict lines, {board: Calibration})] per data version, most
    submissions first."""
    result = []
    for fingerprint, rows in sorted(log.groupby("fingerprint", dropna=False), key=lambda item: -len(item[1])):
        rows = rows.sort_values(RECALL, ascending=False)
        lines, estimates = [], {}
        for name in SCORES:
            scored = rows[rows[name].notna()]
            if name == "public" or len(scored):
                lines.append(verdict(scored[RECALL], scored[name], name))
                with_parts = scored.dropna(subset=PART_COLUMNS)
                runs, scores = with_parts["run"], (with_parts[column] for column in (*PART_COLUMNS, name))
                names = [Path(run).name for run in runs]
                estimates[name] = calibration.fit_share(*scores, name, user_part_scores(runs), names)
                lines.append(estimates[name].describe())
        result.append((fingerprint, rows, lines, estimates))
    return result


def user_part_scores(runs):
    """The logged runs' per-user holdout part recalls (last, random: users x runs, the users all runs have),
    from their holdout_users.csv; None when a run folder or its file is gone (runs from before it was written) or
    unreadable."""
    try:
        tables = [read_holdout_users(run) if Path(run).is_dir() else None for run in runs]
    except (OSError, ValueError, TypeError):  # a damaged file (pandas raises any of these): no users' noise
        return None
    if not tables or any(table is None or not set(PART_COLUMNS) <= set(table.columns) for table in tables):
        return None
    users = sorted(set.intersection(*(set(table.index) for table in tables)))
    return tuple(np.column_stack([table.loc[users, part] for table in tables]) for part in PART_COLUMNS)


def as_text(listed, outputs):
    blocks = []
    for fingerprint, rows, lines, _ in listed:
        shown = pd.DataFrame(
            {
                "run": [_short(run, outputs) for run in rows["run"]],
                "model": rows["model"],
                f"holdout {RECALL}": rows[RECALL].map("{:.4f}".format),
                "95% interval": [
                    f"{lo:.4f} to {hi:.4f}" if pd.notna(lo) else "" for lo, hi in zip(rows["ci low"], rows["ci high"])
                ],
                **{name: rows[name].map(lambda v: "" if pd.isna(v) else f"{v:.4f}") for name in SCORES},
            }
        )
        table = shown.to_markdown(index=False, tablefmt="simple", disable_numparse=True)
        blocks.append(f"data {fingerprint} ({len(rows)} submissions)\n{table}\n" + "\n".join(lines))
    return "\n\n".join(blocks)


def _short(run, outputs):
    """A run's path relative to the outputs folder when inside it."""
    try:
        return str(Path(run).relative_to(Path(outputs).resolve()))
    except ValueError:
        return run


def scatter(listed, outputs, path):
    """Left: holdout recall@10 (with its interval) against the leaderboard scores, one colour per data
    version; right: the leaderboard scores against the calibrated holdout score, with the fitted line."""
    figure, (axis, fitted) = plt.subplots(1, 2, figsize=(13, 5.5))
    markers = {"public": "o", "private": "^"}
    for (fingerprint, rows, _, estimates), colour in zip(listed, itertools.cycle(plt.cm.tab10.colors)):
        calibration.plot_fit(fitted, rows, estimates, f"data {fingerprint}", colour, markers)
        for name in SCORES:
            scored = rows[rows[name].notna()]
            if len(scored):
                errors = np.nan_to_num([scored[RECALL] - scored["ci low"], scored["ci high"] - scored[RECALL]])
                label = f"{name}, data {fingerprint}"
                if len(scored) >= MIN_SUBMISSIONS:
                    label += f" (Spearman {agreement(scored[RECALL], scored[name])[0]:+.2f})"
                axis.errorbar(
                    scored[RECALL].to_numpy(),
                    scored[name].to_numpy(),
                    xerr=errors,
                    fmt=markers[name],
                    color=colour,
                    elinewidth=0.8,
                    capsize=2,
                    label=label,
                )
        for _, row in rows.iterrows():
            axis.annotate(
                Path(_short(row["run"], outputs)).name[:28],
                (row[RECALL], row["public"]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
    axis.set(
        xlabel=f"holdout {RECALL} (95% interval)",
        ylabel="leaderboard Recall@10",
        title="Does the local holdout rank submissions like the leaderboard?",
    )
    fitted.set(
        xlabel=f"calibrated holdout: a · {calibration.LAST} + (1 - a) · {calibration.RANDOM}",
        ylabel="leaderboard Recall@10",
        title="The fitted board share a of latest items (line: board = level × calibrated)",
    )
    if not fitted.get_legend_handles_labels()[0]:
        fitted.text(0.5, 0.5, "no estimate: see the listing", ha="center", transform=fitted.transAxes)
    for panel in (axis, fitted):
        panel.grid(alpha=0.3)
        if panel.get_legend_handles_labels()[0]:
            panel.legend(fontsize=8)
    figure.tight_layout()
    write_atomic(path, lambda tmp: figure.savefig(tmp, dpi=110))
    plt.close(figure)


# --- the command ---


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "python -m recbole_ext.leaderboard"
    try:
        if argv[:1] == ["add"]:
            parser = argparse.ArgumentParser(prog=f"{prog} add", description="record a submitted run")
            parser.add_argument("run", metavar="RUN_DIR", help="the run, ensemble or best/ folder submitted")
            parser.add_argument("--public", required=True, help="its public leaderboard Recall@10")
            parser.add_argument("--private", help="its private leaderboard Recall@10, when known")
            parser.add_argument("--outputs", default="outputs", help="the folder of the log (default: outputs)")
            parser.add_argument("--replace", action="store_true", help="change the scores of a recorded run")
            args = parser.parse_args(argv[1:])
            row = add(args.run, args.public, args.private, args.outputs, args.replace)
            print(
                f"recorded {args.run}: holdout {RECALL} {row[RECALL]:.4f}, public {row['public']:.4f}"
                + (f", private {row['private']:.4f}" if pd.notna(row["private"]) else "")
                + f" in {Path(args.outputs) / LOG_FILE}"
            )
            return 0
        parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0], usage=__doc__.split("\n\n")[1])
        parser.add_argument("--outputs", default="outputs", help="the folder of the log (default: outputs)")
        args = parser.parse_args(argv)
        path = Path(args.outputs) / LOG_FILE
        log = read_log(path)
        if log.empty:
            raise LeaderboardError(
                f"{path}: no submission recorded yet; record one with `{prog} add RUN_DIR --public SCORE`"
            )
        listed = listing(log)
        print(as_text(listed, args.outputs))
        estimates = json_text(calibration.estimates_json([(fp, e) for fp, *_, e in listed]))
        write_atomic(Path(args.outputs) / ESTIMATE_FILE, lambda tmp: Path(tmp).write_text(estimates))
        scatter(listed, args.outputs, Path(args.outputs) / PLOT_FILE)
        print(f"\nplot: {Path(args.outputs) / PLOT_FILE}\nestimates: {Path(args.outputs) / ESTIMATE_FILE}")
        return 0
    except LeaderboardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
