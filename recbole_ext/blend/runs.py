"""A recipe's runs: their keys and folders, which are finished, one Ray task for each of the others, and a
member's seed runs averaged. Ray's workers import the task, _train, from this module."""

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import ray

from recbole_ext import ConfigError
from recbole_ext.blend import fusion
from recbole_ext.blend.members import load_members, load_prepared
from recbole_ext.blend.recipe import member_settings
from recbole_ext.evaluator.metrics import holdout_detail, mean_scores, part_scores
from recbole_ext.quick_start import pipeline
from recbole_ext.tune.driver import start_ray
from recbole_ext.tune.space import TUNE_DEFAULTS, parse_resources
from recbole_ext.tune.trial import trial_resources, use_assigned_cpus
from recbole_ext.utils import run_folder
from recbole_ext.utils.files import claimed, json_text, staged

logger = logging.getLogger("movierec.blend")

# settings that say where a run reads, writes or logs, or how it is scheduled: not part of a run's key
# (the data is, through the prepared data's fingerprint)
NOT_IN_KEY = {
    "output_dir",
    "data",
    "data_dir",
    "show_progress",
    "state",
    "quick",
    "tune",
    "predict_batch_users",
    "tracking",
}


@dataclass
class Run:
    member: str
    seed: int | None  # None: the member's own seed, one run
    settings: object
    key: str
    folder: Path
    resources: dict
    status: str = "planned"  # reused | trained | failed
    error: str | None = None
    log: str | None = None
    started: float | None = None
    finished: float | None = None
    worker: str | None = None  # the node and process that trained it (where its Ray logs are)

    @property
    def label(self):
        return self.member if self.seed is None else f"{self.member} (seed {self.seed})"


def run_key(settings, fingerprint):
    """The hash of what a run computes: its settings, but where and how it runs, and the prepared data."""
    values = {key: value for key, value in settings.values.items() if key not in NOT_IN_KEY}
    return _hash(json.dumps([fingerprint, values], sort_keys=True, default=str))


def _hash(text):
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def is_finished(folder):
    """A run folder with its validation lists, final lists and summary, without an error."""
    folder = Path(folder)
    try:
        return all(
            (folder / name).is_file() for name in (run_folder.VALID_TOP, run_folder.FULL_TOP)
        ) and not json.loads((folder / run_folder.SUMMARY).read_text()).get("error")
    except (OSError, ValueError):
        return False


def plan(recipe, runs_dir, overrides=()):
    """Every run of the recipe with its settings, key and folder; all must train on the same prepared data."""
    members = []  # every member's settings are checked before any data is prepared
    for spec in recipe.members:
        settings = member_settings(recipe, spec, overrides)
        resources = parse_resources(
            (settings.values.get("tune") or {}).get("resources_per_trial", TUNE_DEFAULTS["resources_per_trial"]),
            f"{recipe.path}: members.{spec.name}: tune.resources_per_trial",
        )
        members.append((spec, settings, resources))
    runs, fingerprints = [], {}
    for spec, settings, resources in members:
        fingerprint = pipeline.prepare_data(settings).fingerprint
        fingerprints.setdefault(fingerprint, []).append(spec.name)
        for seed in spec.seeds or [None]:
            run_settings = settings if seed is None else settings.with_values(seed=seed)
            run_settings.values["show_progress"] = False  # progress bars of runs side by side garble the console
            key = run_key(run_settings, fingerprint)
            name = spec.name if seed is None else f"{spec.name}-seed{seed}"
            folder = Path(runs_dir) / f"{name}-{key}"
            runs.append(
                Run(
                    spec.name,
                    seed,
                    run_settings.with_values(output_dir=str(folder)),
                    key,
                    folder,
                    resources,
                    "reused" if is_finished(folder) else "planned",
                )
            )
    if len(fingerprints) > 1:
        detail = "; ".join(f"{fp} ({', '.join(names)})" for fp, names in fingerprints.items())
        raise ConfigError(
            f"{recipe.path}: the members would train on different prepared data (data, dataset or "
            f"holdout settings differ): {detail}; set them once under settings:"
        )
    return runs


def _train(settings):
    """A Ray task: one run of the pipeline, with as many torch threads as the task's CPUs. A run another
    job (a second blend sharing the runs folder) is training is waited for, then reused."""
    use_assigned_cpus()
    started, folder = time.time(), Path(settings["output_dir"])
    with claimed(folder, wait=True):
        if not is_finished(folder):
            shutil.rmtree(folder, ignore_errors=True)  # a folder that is not a finished run: train again
            pipeline.run(settings)
    return started, time.time(), f"{ray.util.get_node_ip_address()} pid {os.getpid()}"


_train_task = ray.remote(max_retries=0)(_train)


def train(runs, address=None, max_parallel=None):
    """Train the runs that are not finished as Ray tasks, at most max_parallel at a time (None: as the
    resources allow); a failed run is recorded with its error, the others go on."""
    waiting = [run for run in runs if run.status != "reused"]
    if not waiting:
        return
    started_ray = start_ray(address)
    try:
        for run in waiting:
            run.resources = trial_resources(run.resources, run.settings["device"])
        running, limit = {}, max_parallel or len(waiting)
        while waiting or running:
            while waiting and len(running) < limit:
                run = waiting.pop(0)
                logger.info("training %s with %s: %s", run.label, run.resources, run.folder)
                options = {"num_cpus": run.resources["cpu"], "num_gpus": run.resources["gpu"]}
                running[_train_task.options(**options).remote(run.settings)] = run
            try:
                done, _ = ray.wait(list(running), num_returns=1)
            except KeyboardInterrupt:  # runs cut short keep their .interrupted/ folder, as run.py's do
                for task in running:
                    ray.cancel(task)  # a KeyboardInterrupt in the task
                ray.wait(list(running), num_returns=len(running), timeout=60)
                raise
            run = running.pop(done[0])
            try:
                run.started, run.finished, run.worker = ray.get(done[0])
                run.status = "trained"
            except ray.exceptions.RayError as error:  # the run's exception, or its worker died
                cause = getattr(error, "cause", None)
                run.status, run.error = (
                    "failed",
                    run_folder.error_line(cause if isinstance(cause, BaseException) else error),
                )
                failed = run.folder.with_name(run.folder.name + run_folder.FAILED)
                run.log = str(failed) if failed.exists() else None
                logger.warning("%s failed: %s%s", run.label, run.error, f" (its log: {run.log})" if run.log else "")
    finally:
        if started_ray:
            ray.shutdown()


def member_folders(recipe, runs, runs_dir):
    """{member name: its run folder} for the members with a finished run; a member with several finished
    seed runs gets a folder of their averaged lists."""
    folders = {}
    for spec in recipe.members:
        finished = [run for run in runs if run.member == spec.name and run.status != "failed"]
        if finished and spec.seeds is None:
            folders[spec.name] = finished[0].folder
        elif finished:
            key = _hash(" ".join(run.key for run in finished))
            folders[spec.name] = average_seeds(finished, Path(runs_dir) / f"{spec.name}-seeds-{key}")
    return folders


def average_seeds(runs, folder):
    """A run folder whose lists average those of the seed runs (the ensemble's score fusion, equal weights:
    the mean of per-user min-max scaled scores); made once, then reused."""
    if is_finished(folder):
        return folder
    members = load_members([run.folder for run in runs])
    first = members[0].summary
    top_n = runs[0].settings["top_n"]
    weights = [1 / len(members)] * len(members)
    valid = fusion.score_fusion([m.valid for m in members], weights, k=top_n)
    full = fusion.score_fusion([m.full for m in members], weights, k=top_n)
    hidden = pd.read_csv(first["data"]["holdout_path"])
    prepared = load_prepared(first["data"]["data_path"])
    users = run_folder.holdout_activity(prepared, hidden).join(part_scores(valid, hidden))
    summary = {
        **{key: first[key] for key in ("model", "data", "config")},
        "holdout": mean_scores(users),
        "holdout_detail": holdout_detail(users),
        "seeds": [
            {"seed": run.seed, "path": str(run.folder), "holdout": m.summary["holdout"]}
            for run, m in zip(runs, members)
        ],
        "averaged": "the mean of each seed run's per-user min-max scaled scores (ensemble score fusion)",
        "timings": {},
    }
    with staged(folder, replace=True) as staging:  # replaces a folder that is not a finished average
        valid[["user", "item", "score"]].to_csv(staging / run_folder.VALID_TOP, index=False)
        run_folder.write_full_lists(staging, full, prepared.inter_path(prepared.name))
        run_folder.write_holdout_users(staging, users)
        (staging / run_folder.SUMMARY).write_text(json_text(summary))
    return folder
