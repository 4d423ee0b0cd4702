"""A run folder: what it holds, and how it comes to be (runs, --predict-only, ensembles, tune trials).

A folder is written under a hidden staging name beside its final one and
renamed into place when complete (``files.staged``; staging names hold the host
and pid, so that the next writer removes what a killed process left). A run's folder
also holds its run.log (``run_folder``); a run that stops early keeps what it
finished: ``<output>.failed/`` (an error: run.log, error.txt) or
``<output>.interrupted/`` (Ctrl-C, SIGTERM: run.log), each with the validation
(summary.json with the holdout scores and the error, valid_top50.csv) when it
was complete. Bad input (a ConfigError or RawDataError before the validation is
complete) keeps nothing: its one-line message says it all. Commands call
``stop_on_signals``: SIGTERM stops them as Ctrl-C does.

Nothing here imports torch or RecBole: the commands that only read outputs
(report, leaderboard, ensemble) start fast.
"""

import datetime
import errno
import json
import logging
import shutil
import signal
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from atomic_data import RawDataError
from atomic_data.tables import read_inter
from recbole_ext import ConfigError
from recbole_ext.evaluator.metrics import K, activity_groups
from recbole_ext.utils.files import claimed, json_text, new_staging

logger = logging.getLogger("movierec")

ENSEMBLE_MODEL = "ensemble"  # the `model` of an ensemble's summary.json
SUBMISSION = "submission.csv"
VALID_TOP = "valid_top50.csv"
FULL_TOP = "full_top50.csv"
SUMMARY = "summary.json"
MODEL_FILE = "model.pth"
LOG_FILE = "run.log"
HOLDOUT_USERS = "holdout_users.csv"
FAILED, INTERRUPTED = ".failed", ".interrupted"  # suffixes of the folders of runs that stopped early


def default_output(name):
    """outputs/<name>-<time>, in the directory the command runs from."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("outputs").resolve() / f"{name}-{stamp}"


def output_folder(name, output_dir=None):
    """Where a run named ``name`` writes: output_dir, or outputs/<name>-<time>; it must not exist yet."""
    final = Path(output_dir) if output_dir else default_output(name)
    if final.exists():
        raise ConfigError(f"output folder {final} already exists; choose another --output")
    return final


def kept_folders(final):
    """final and the folders a run that stopped early leaves in its place."""
    return [final, *(final.with_name(final.name + suffix) for suffix in (FAILED, INTERRUPTED))]


@contextmanager
def run_folder(final, state):
    """A run's folder: staged, with its run.log (``state``: the log level); a run that stops early keeps
    what _keep_finished_work says (the exception's kept_in). A second job writing final is refused."""
    with claimed(final), _run_folder(final, state) as staging:
        yield staging


@contextmanager
def _run_folder(final, state):
    output_folder(final.name, final)  # made by a job that finished since this one started
    staging = new_staging(final)
    try:
        with run_logging(staging / LOG_FILE, state):
            yield staging
    except BaseException as error:
        error.kept_in = _keep_finished_work(staging, final, error)
        raise
    shutil.rmtree(staging / "checkpoints", ignore_errors=True)
    staging.rename(final)


def _keep_finished_work(staging, final, error):
    """What a run that stopped early leaves, and where: the log, the validation when it was complete (the
    summary with the error), the traceback of an error; bad input before that leaves nothing (returns None)."""
    validated = (staging / SUMMARY).is_file()
    if isinstance(error, (ConfigError, RawDataError)) and not validated:
        shutil.rmtree(staging)
        return None
    interrupted = isinstance(error, KeyboardInterrupt)
    for path in staging.iterdir():
        if path.name not in (LOG_FILE, SUMMARY, VALID_TOP):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if validated:
        summary = json.loads((staging / SUMMARY).read_text())
        summary["error"] = "interrupted" if interrupted else error_line(error)
        (staging / SUMMARY).write_text(json_text(summary))
    if not interrupted:
        (staging / "error.txt").write_text("".join(traceback.format_exception(error)))
    kept = final.with_name(final.name + (INTERRUPTED if interrupted else FAILED))
    shutil.rmtree(kept, ignore_errors=True)
    staging.rename(kept)
    return kept


class Terminated(KeyboardInterrupt):
    """SIGTERM, what `timeout` and job schedulers send: stops a command the way Ctrl-C does."""

    received = False  # remembered: Ray's waits re-raise it as a plain KeyboardInterrupt


def _terminate(signum, frame):
    Terminated.received = True
    raise Terminated()


def stop_on_signals():
    """A command's Ctrl-C and SIGTERM raise KeyboardInterrupt (SIGTERM: Terminated) in its main thread."""
    signal.signal(signal.SIGTERM, _terminate)
    # A shell starts background jobs (`nohup run.py ... &`) with SIGINT ignored, and Python keeps that:
    # `kill -INT` would not stop them.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def stopped_by():
    """What interrupted the command, for its `interrupted` line."""
    return "SIGTERM" if Terminated.received else "Ctrl-C"


def error_line(error):
    """An exception as one line: its type and the last line of its message; a write that failed says why."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    line = text if text.startswith(type(error).__name__) else f"{type(error).__name__}: {text}".rstrip(": ")
    # torch.save's error when a write fails ("[enforce fail at inline_container.cc:672] . unexpected pos"), and
    # "File too large", say nothing of why (ENOSPC's and EDQUOT's own text does)
    if getattr(error, "errno", None) == errno.EFBIG or "unexpected pos" in text:
        line += " (a file could not be written whole: the disk is full, or a quota or file size limit was reached)"
    return line


@contextmanager
def run_logging(log_file, state):
    """Log RecBole's and movierec's messages to the console and the run's log file."""
    import colorlog
    from recbole.utils.logger import RemoveColorFilter  # here: a run has RecBole loaded, a report does not

    level = getattr(logging, str(state or "INFO").upper(), logging.INFO)
    root = logging.getLogger()
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    file_handler.addFilter(RemoveColorFilter())  # RecBole colours its messages
    console = colorlog.StreamHandler()
    console.setFormatter(colorlog.ColoredFormatter("%(log_color)s%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    previous = root.level
    root.setLevel(level)
    for handler in (file_handler, console):
        handler.setLevel(level)
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in (file_handler, console):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous)


class Timer(dict):
    """Seconds of each step, for summary.json."""

    @contextmanager
    def step(self, name):
        started = time.perf_counter()
        logger.info("%s ...", name)
        yield
        self[name] = round(time.perf_counter() - started, 3)


# --- what a run folder holds ---


def holdout_activity(prepared, holdout):
    """Each holdout user's training interactions (in the validation fit) and activity group: the
    same for every run on one data version, since both come from its files alone."""
    train_users = read_inter(prepared.inter_path(prepared.valid_name))[0]
    counts = pd.Series(train_users).value_counts().reindex(np.unique(holdout["user"]), fill_value=0)
    counts = counts.rename("train_interactions").rename_axis("user")
    return pd.concat([counts, activity_groups(counts)], axis=1)


def write_holdout_users(folder, users):
    """holdout_users.csv: user, its scores on the holdout and its parts, activity when known."""
    users.to_csv(Path(folder) / HOLDOUT_USERS, float_format="%.6g")


def read_holdout_users(folder):
    """A run's holdout_users.csv indexed by user, or None when it has none (older runs)."""
    path = Path(folder) / HOLDOUT_USERS
    return pd.read_csv(path, index_col="user") if path.is_file() else None


def submission_frame(top, inter_path):
    """The first 10 of each user's list; checks every user of the data is there."""
    submission = top[top["rank"] < K].sort_values(["user", "rank"])[["user", "item"]]
    users = pd.unique(read_inter(inter_path)[0])
    missing = np.setdiff1d(users, submission["user"].unique())
    if len(missing):
        raise RuntimeError(f"{len(missing)} users have no recommendations, e.g. {missing[:5].tolist()}")
    return submission


def write_full_lists(out, full_top, full_inter):
    """submission.csv (checked against the users of full_inter) and full_top50.csv."""
    submission_frame(full_top, full_inter).to_csv(out / SUBMISSION, index=False)
    full_top[["user", "item", "score"]].to_csv(out / FULL_TOP, index=False)
