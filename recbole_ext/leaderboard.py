"""A log of submitted runs: their leaderboard scores next to their holdout scores.

    python -m recbole_ext.leaderboard add RUN_DIR --public SCORE [--private SCORE] [--outputs DIR] [--replace]
    python -m recbole_ext.leaderboard [--outputs DIR]

`add` records a submitted run with its holdout scores (all users and by part)
in DIR/leaderboard.csv; without a command, it judges per data version whether
the holdout ranks the submissions like the leaderboard and estimates the
board's share of latest items (evaluator/calibration.py, on the holdout's parts scored
as the board scores where the run folders keep their lists: evaluator/slots.py; DIR/leaderboard.json), see
docs/numbers.md. The log itself: utils/leaderboard_log.py.
"""

import argparse
import itertools
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from recbole_ext.evaluator import calibration
from recbole_ext.evaluator.metrics import RECALL
from recbole_ext.utils.files import json_text, write_atomic
from recbole_ext.utils.leaderboard_log import (
    LOG_FILE,
    PART_COLUMNS,
    SCORES,
    LeaderboardError,
    add,
    board_like_part_scores,
    read_log,
    user_part_scores,
)

PLOT_FILE = "leaderboard.png"
ESTIMATE_FILE = calibration.ESTIMATE_FILE.name
MIN_SUBMISSIONS = 3  # fewer cannot show an order
# Spearman correlations: from AGREES up the local split ranks like the leaderboard, below ROUGHLY it does not
AGREES, ROUGHLY = 0.8, 0.4


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
                estimates[name] = fit_board(with_parts, name)
                lines.append(estimates[name].describe())
        result.append((fingerprint, rows, lines, estimates))
    return result


def fit_board(rows, board):
    """The Calibration of one board from its log rows: on the holdout's parts scored as the board scores (each
    run's validation lists, evaluator/slots.py) where the run folders still hold them, else on the parts as
    logged."""
    runs, names = rows["run"].tolist(), [Path(run).name for run in rows["run"]]
    scores = rows[board].to_numpy(dtype=float)
    board_like = board_like_part_scores(runs, scores)
    if board_like is None:
        return calibration.fit_share(
            *(rows[part] for part in PART_COLUMNS), scores, board, user_part_scores(runs), names
        )
    means = [np.nanmean(values, axis=0) for values in board_like]
    estimate = calibration.fit_share(*means, scores, board, board_like, names)
    estimate.parts = calibration.BOARD_LIKE
    return estimate


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


def plot_fit(axis, estimates, label, colour, markers):
    """One data version's board scores against their calibrated holdout scores (the holdout parts the fit used),
    with the fitted lines (board = calibrated)."""
    for board, estimate in estimates.items():
        if estimate.last_share is None:
            continue
        last, random, scores = estimate.scores
        a, (low, high) = estimate.last_share, estimate.interval
        mix = a * last + (1 - a) * random
        axis.plot(
            mix, scores, markers[board], color=colour, label=f"{board}, {label}: a = {a:.2f} ({low:.2f} to {high:.2f})"
        )
        ends = np.array([mix.min(), mix.max()])
        axis.plot(ends, ends, "-" if board == "public" else "--", color=colour, linewidth=1)


def scatter(listed, outputs, path):
    """Left: holdout recall@10 (with its interval) against the leaderboard scores, one colour per data
    version; right: the leaderboard scores against the calibrated holdout score, with the fitted line."""
    figure, (axis, fitted) = plt.subplots(1, 2, figsize=(13, 5.5))
    markers = {"public": "o", "private": "^"}
    for (fingerprint, rows, _, estimates), colour in zip(listed, itertools.cycle(plt.cm.tab10.colors)):
        plot_fit(fitted, estimates, f"data {fingerprint}", colour, markers)
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
        xlabel=f"calibrated holdout: a · last + (1 - a) · random ({RECALL} parts as fitted)",
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
