"""One trial, inside a Ray worker: Ray's trainable, and the resources each trial gets.

A trial's folder is a run folder (run_folder.py): trials/<id>/, <id>.failed/,
<id>.interrupted/, or <id>.stopped/ when Ray Tune stopped it.
"""

import json
import logging
import shutil
import time
from pathlib import Path

import ray
import torch
from ray import tune

from recbole_ext import ConfigError
from recbole_ext.quick_start import pipeline
from recbole_ext.tune.space import sampled_settings
from recbole_ext.utils import tracking
from recbole_ext.utils.files import staging_path
from recbole_ext.utils.run_folder import FAILED, SUMMARY, kept_folders, write_holdout_users

logger = logging.getLogger("movierec.tune")

STOPPED = ".stopped"  # the suffix of a trial Ray Tune stopped (the pipeline's are FAILED and INTERRUPTED)


class TrialStopped(tracking.Stopped):
    """Ray Tune stopped this trial at a report: the scheduler (ASHA), or an interrupted search."""


def run_trial(config, settings, trials_dir):
    """Ray's trainable: the pipeline with the sampled values; one report per holdout evaluation."""
    output = Path(trials_dir) / tune.get_context().get_trial_id()
    trial = sampled_settings(settings, config, str(output))
    if (output / SUMMARY).is_file():  # it finished, but the search was interrupted before Ray knew
        return _report_again(json.loads((output / SUMMARY).read_text()), trial["eval_step"])
    _clear_earlier_attempt(output)  # a trial restarted by --resume starts clean
    use_assigned_cpus()
    trial.values["show_progress"] = False  # progress bars of parallel trials garble the console
    evaluations, started = 0, time.perf_counter()
    best_users = None  # the per-user scores of the best evaluation so far

    def report(scores, users):
        nonlocal evaluations, best_users
        evaluations += 1
        best_users = users
        epoch = evaluations * trial["eval_step"]  # RecBole evaluates after every eval_step-th epoch
        try:
            tune.report({**scores, "epoch": epoch, "trial_seconds": time.perf_counter() - started})
        except SystemExit:  # Ray's way to end a trial the scheduler stopped
            raise TrialStopped(f"stopped by Ray Tune after epoch {epoch}") from None

    try:
        pipeline.run(trial, on_result=report, validate_only=True)
    except TrialStopped:
        stopped = output.with_name(output.name + STOPPED)
        output.with_name(output.name + FAILED).rename(stopped)
        if best_users is not None:  # a stopped trial takes part in the honest estimate too
            write_holdout_users(stopped, best_users)
        raise SystemExit(0) from None  # what Ray expects of a stopped trial


def _report_again(summary, eval_step):
    """The reports of a trial that finished, from its summary, without training it again."""
    seconds = sum(summary["timings"].values())
    for evaluation, scores in enumerate(summary["valid_history"], 1):
        scores = {key: value for key, value in scores.items() if key != "epoch"}
        tune.report({**scores, "epoch": evaluation * eval_step, "trial_seconds": seconds})


def _clear_earlier_attempt(output):
    for path in [*trial_folders(output), *output.parent.glob(staging_path(output, "*").name)]:
        shutil.rmtree(path, ignore_errors=True)


def trial_folders(folder):
    return [*kept_folders(folder), folder.with_name(folder.name + STOPPED)]


def trial_dirname(trial):
    return trial.trial_id


def use_assigned_cpus():
    """In a Ray worker: torch uses as many threads as the CPUs Ray gave the task (not every core)."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))


def trial_resources(resources, device, nodes=None):
    """The CPU and GPU share of each trial ({cpu, gpu} as asked), fitted to the device setting and the
    cluster's nodes (their Ray resources; default: the running cluster's)."""
    if nodes is None:
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    most_cpus = max(node.get("CPU", 0) for node in nodes)
    most_gpus = max(node.get("GPU", 0) for node in nodes)
    cpu, gpu = resources["cpu"], resources["gpu"]
    if device == "cuda" and not most_gpus:
        raise ConfigError("device: cuda, but the Ray cluster has no GPU; set device: auto or cpu")
    if cpu > most_cpus:  # a trial no node can hold would wait forever
        logger.warning("each trial gets %g CPUs, the most a Ray node has, not the %g asked for", most_cpus, cpu)
        cpu = most_cpus
    if gpu and (device == "cpu" or not most_gpus):
        reason = "device is cpu" if device == "cpu" else "the Ray cluster has no GPU"
        logger.warning("trials run on CPU (%s): the GPU share of %g per trial is dropped", reason, gpu)
        gpu = 0
    if device == "cuda" and not gpu:
        raise ConfigError("device: cuda needs a GPU share per trial: set tune.resources_per_trial.gpu (e.g. 0.25)")
    if device == "auto" and not gpu and most_gpus:  # Ray hides the GPUs from a trial without a share
        logger.warning(
            "trials run on CPU though the Ray cluster has GPUs: tune.resources_per_trial.gpu is 0; "
            "set it (e.g. 0.25) to use them"
        )
    return {"cpu": cpu, "gpu": gpu}
