"""The leaderboard log (DIR/leaderboard.csv): submitted runs with their leaderboard scores beside their holdout
scores (all users and by part), read with each bad cell named, and added to atomically. Its command line and
the verdict read from it: recbole_ext/leaderboard.py."""

import datetime
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_ext.evaluator import calibration, slots
from recbole_ext.evaluator.metrics import NDCG, RECALL
from recbole_ext.utils.files import write_atomic
from recbole_ext.utils.run_folder import ENSEMBLE_MODEL, SUBMISSION, SUMMARY, VALID_TOP, read_holdout_users

LOG_FILE = "leaderboard.csv"
SCORES = ("public", "private")
PART_COLUMNS = [calibration.LAST, calibration.RANDOM]  # absent from logs written before they were recorded
LOG_COLUMNS = ["run", "model", "fingerprint", RECALL, "ci low", "ci high", NDCG, *SCORES, "recorded", *PART_COLUMNS]


class LeaderboardError(ValueError):
    """Bad input or a log that cannot be read; the message says which."""


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


def _holdout_tables(runs):
    """Each logged run's holdout_users.csv; None when a run folder or its file is gone (runs from before it was
    written), lacks the parts, or is unreadable."""
    try:
        tables = [read_holdout_users(run) if Path(run).is_dir() else None for run in runs]
    except (OSError, ValueError, TypeError, KeyError):  # a damaged file (pandas raises any of these)
        return None
    if not tables or any(table is None or not set(PART_COLUMNS) <= set(table.columns) for table in tables):
        return None
    return tables


def _users_by_runs(tables):
    """(last, random): users x runs of per-user part tables, the users all runs have."""
    users = sorted(set.intersection(*(set(table.index) for table in tables)))
    return tuple(np.column_stack([table.loc[users, part] for table in tables]) for part in PART_COLUMNS)


def user_part_scores(runs):
    """The logged runs' per-user holdout part recalls (last, random: users x runs, the users all runs have),
    from their holdout_users.csv; None where _holdout_tables finds none."""
    tables = _holdout_tables(runs)
    return None if tables is None else _users_by_runs(tables)


def board_like_part_scores(runs, board_scores, parts_of=slots.board_like_parts):
    """The runs' per-user holdout part recalls as the board scores its hidden items (evaluator/slots.py): from each
    run's validation lists (valid_top50.csv; parts_of(lists, holdout, board score)); a run without them (an
    ensemble keeps only its top 10) gets its holdout_users.csv parts times the mean ratio (these over as logged,
    per part) of the runs that have them.
    Returns (last, random): users x runs, the users all runs have; None where a run's files are gone or
    unreadable, or no run has validation lists."""
    tables = _holdout_tables(runs)
    listed = [i for i, run in enumerate(runs) if (Path(run) / VALID_TOP).is_file()]
    if tables is None or not listed:
        return None
    try:
        holdout = pd.read_csv(json.loads((Path(runs[listed[0]]) / SUMMARY).read_text())["data"]["holdout_path"])
        ratios = []
        for i in listed:
            top = pd.read_csv(Path(runs[i]) / VALID_TOP)
            board_like = parts_of(top.assign(rank=top.groupby("user").cumcount()), holdout, board_scores[i])
            ratios.append(board_like.mean() / tables[i][PART_COLUMNS].mean())
            tables[i] = board_like
    except (OSError, ValueError, TypeError, KeyError):  # a damaged file (pandas raises any of these)
        return None
    ratio = pd.concat(ratios, axis=1).mean(axis=1)
    if len(listed) < len(runs) and not np.isfinite(ratio).all():  # a part no listed run found: nothing to scale by
        return None
    return _users_by_runs([table if i in listed else table[PART_COLUMNS] * ratio for i, table in enumerate(tables)])
