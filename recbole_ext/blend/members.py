"""Finished runs read for a blend: their summaries, validation and final top-N lists, checked to share
one data version and one holdout, and the prepared data they were made on."""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from atomic_data import Prepared
from recbole_ext.blend.fusion import EnsembleError
from recbole_ext.utils.run_folder import ENSEMBLE_MODEL, FULL_TOP, SUMMARY, VALID_TOP


@dataclass
class Member:
    name: str
    path: Path
    summary: dict
    valid: pd.DataFrame  # user, item, score, rank: the validation fit's top-N
    full: pd.DataFrame  # the same for the final fit on all data


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
        raise EnsembleError(
            f"{path}: a run that stopped early ({summary['error']}): it has its validation but no final fit to blend"
        )
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
        detail = "; ".join(
            f"{(shown or {}).get(value, value)} ({', '.join(runs)})" for value, runs in runs_by_value.items()
        )
        raise EnsembleError(f"the runs differ in {what}: {detail}. Blend runs made on the same prepared data.")


def _read_list(path):
    """A run's top-N file; its rows are in rank order per user."""
    top = pd.read_csv(path)
    return top.assign(rank=top.groupby("user", sort=False).cumcount())


def load_prepared(data_path):
    """The runs' prepared data, with both .inter files: the submission's users and their training interactions."""
    try:
        prepared = Prepared.load(data_path)
        complete = all(prepared.inter_path(name).is_file() for name in (prepared.name, prepared.valid_name))
    except (OSError, ValueError, KeyError):
        complete = False
    if not complete:
        raise EnsembleError(f"{data_path}: the runs' prepared data is gone or incomplete (needed for its user list)")
    return prepared
