"""Hyper-parameter search with Ray Tune: ``python tune.py --config yaml/<model>.yaml``.

A search is a model's usual settings plus a ``tune:`` section. Its syntax is
defined once, here (TUNE_DEFAULTS, DISTRIBUTIONS, SCHEDULERS, SEARCHES), and
documented in the README:

    tune:
      metric: recall@10                 # recall@10 | ndcg@10 of the holdout
      mode: max
      num_samples: 20                   # trials; with grid entries: num_samples x the grid
      search_space:                     # setting: {distribution: arguments}
        learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
        reg_weight: {grid: [100, 250, 500, 1000]}
      scheduler: {asha: {grace_period: 2}}   # fifo | asha; max_t follows epochs
      search: random                    # random | optuna | hyperopt
      resources_per_trial: {cpu: 2, gpu: 0.25}
      max_concurrent_trials: 4

Each trial calls ``pipeline.run``, the function run.py calls, with its sampled
values merged into the settings (checked like any run's) and validate_only,
and reports the holdout scores to Ray after every evaluation, so ASHA can stop
poor trials early. The driver prepares the data and the dataset cache once;
trials reuse both and depend neither on the working directory (Ray changes
it) nor on sys.argv.

The output folder:
    search.yaml     the settings of the search; ``--resume`` reads them
    ray/            Ray Tune's experiment (results, the state ``--resume`` restores)
    trials/<id>/    a trial's pipeline output (run.log, summary.json);
                    <id>.failed/ when it failed, <id>.stopped/ when Ray Tune stopped it
                    (the scheduler, or an interrupted search), <id>.interrupted/ when
                    its worker was interrupted
    trials.csv      one row per trial; trials.png: the metric per trial and per searched value
    best.yaml       the best trial's settings: ``python run.py --config best.yaml``
    best/           with --retrain-best: the best settings fitted on all data, submission.csv

The best trial's score is fitted: it was chosen on the users it is measured
on. The honest estimate chooses the best trial on one half of the holdout users
and scores it on the other half, both ways, from each trial's per-user scores
(holdout_users.csv in its folder; a stopped trial's are those of its best
evaluation before the stop). trials.csv, the printed table and best.yaml carry both.
"""

import gc
import importlib.util
import itertools
import json
import logging
import math
import os
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import ray
import torch
import yaml
from ray import tune

from recbole_ext import pipeline
from recbole_ext.config import (
    HOLDOUT_METRICS, MANAGED, MOVIEREC_KEYS, ConfigError, Settings, check_settings, did_you_mean, is_int, is_number,
    known_keys, load_settings, recbole_config, resolve_device,
)
from recbole_ext.cache import ReadRecorder
from recbole_ext.data import load_dataset
from recbole_ext.files import staging_path, write_atomic
from recbole_ext.metrics import cross_fitted_choice
from recbole_ext.pretrain import downstream_models, find_pretrained, pretrain
from recbole_ext.run_folder import (
    FAILED, SUMMARY, default_output, error_line, kept_folders, read_holdout_users, write_holdout_users,
)

logger = logging.getLogger("movierec.tune")

ROOT = Path(__file__).resolve().parent.parent
SEARCH_FILE = "search.yaml"
RAY_DIR = "ray"
TRIALS_DIR = "trials"
TRIALS_CSV = "trials.csv"
TRIALS_PLOT = "trials.png"
BEST_FILE = "best.yaml"
BEST_RUN = "best"
STOPPED = ".stopped"  # the suffix of a trial Ray Tune stopped (the pipeline's are FAILED and INTERRUPTED)

# ----------------------------------------------------------------------------
# The tune: section

TUNE_DEFAULTS = {
    "metric": "recall@10",
    "mode": "max",
    "num_samples": 1,
    "search_space": None,  # required
    "scheduler": "fifo",
    "search": "random",
    "resources_per_trial": {"cpu": 1, "gpu": 0},
    "max_concurrent_trials": None,  # None: as many trials as the resources allow
}

# name: (its arguments as written in yaml, Ray's search domain); upper bounds are included
DISTRIBUTIONS = {
    "choice": ("[value, ...]", tune.choice),
    "grid": ("[value, ...]", tune.grid_search),
    "uniform": ("[low, high]", tune.uniform),
    "quniform": ("[low, high, step]", tune.quniform),
    "loguniform": ("[low, high]", tune.loguniform),
    "randint": ("[low, high]", lambda low, high: tune.randint(low, high + 1)),
    "qrandint": ("[low, high, step]", tune.qrandint),
    "lograndint": ("[low, high]", lambda low, high: tune.lograndint(low, high + 1)),
}
LISTED = {"choice", "grid"}
INTEGER = {"randint", "qrandint", "lograndint"}
LOG_SCALE = {"loguniform", "lograndint"}

# scheduler: its options and their defaults (asha: Ray's, max_t None = the settings' epochs)
SCHEDULERS = {
    "fifo": {},
    "asha": {"grace_period": 1, "reduction_factor": 4, "max_t": None, "brackets": 1},
}
# search algorithm: the package it needs
SEARCHES = {"random": None, "optuna": "optuna", "hyperopt": "hyperopt"}
RESOURCES = {"cpu", "gpu"}


@dataclass
class TuneSpec:
    """A checked ``tune:`` section."""

    metric: str
    mode: str
    num_samples: int
    search_space: dict  # setting -> (distribution, arguments)
    scheduler: str
    scheduler_options: dict
    search: str
    resources: dict  # {"cpu": n, "gpu": share}
    max_concurrent_trials: int | None

    def trial_count(self):
        """The trials of the search: num_samples, times the grid for a random search."""
        if self.search != "random":
            return self.num_samples
        grid = math.prod(len(args) for dist, args in self.search_space.values() if dist == "grid")
        return self.num_samples * grid


def parse_tune(settings: Settings) -> TuneSpec:
    """The ``tune:`` section of settings, checked; ConfigError names the file and entry."""
    section = settings.values.get("tune")

    def where(key=None):
        source = settings.sources.get(f"tune.{key}") or settings.sources.get("tune", "settings")
        return f"{source}: tune" + (f".{key}" if key else "")

    if not isinstance(section, dict) or not section:
        raise ConfigError(f"{where()}: expected a `tune:` section with a search_space for {settings.model}, "
                          f"got {section!r}")
    for key in section:
        if key not in TUNE_DEFAULTS:
            raise ConfigError(f"{where()}: unknown entry {key!r}{did_you_mean(key, TUNE_DEFAULTS)}")
    values = {**TUNE_DEFAULTS, **section}

    if values["metric"] not in HOLDOUT_METRICS:
        raise ConfigError(f"{where('metric')} must be {' or '.join(HOLDOUT_METRICS)}, got {values['metric']!r}")
    if values["mode"] not in ("max", "min"):
        raise ConfigError(f"{where('mode')} must be max or min, got {values['mode']!r}")
    if not is_int(values["num_samples"]) or values["num_samples"] < 1:
        raise ConfigError(f"{where('num_samples')} must be an integer >= 1, got {values['num_samples']!r}")
    limit = values["max_concurrent_trials"]
    if limit is not None and (not is_int(limit) or limit < 1):
        raise ConfigError(f"{where('max_concurrent_trials')} must be an integer >= 1, got {limit!r}")
    search = values["search"]
    if not isinstance(search, str) or search not in SEARCHES:
        raise ConfigError(f"{where('search')}: unknown search {search!r}{did_you_mean(search, SEARCHES)}")
    if SEARCHES[search] and importlib.util.find_spec(SEARCHES[search]) is None:
        raise ConfigError(f"{where('search')}: {search} needs the {SEARCHES[search]} package, which is not "
                          f"installed; use search: random, or install it")
    scheduler, options = _parse_scheduler(values["scheduler"], settings, where("scheduler"))
    resources = _parse_resources(values["resources_per_trial"], where("resources_per_trial"))
    space = _parse_space(values["search_space"], settings, search, where("search_space"))
    return TuneSpec(values["metric"], values["mode"], values["num_samples"], space, scheduler, options, search,
                    resources, limit)


def _parse_space(space, settings, search, where):
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where} must map settings to distributions, e.g. "
                          f"`learning_rate: {{loguniform: [1.0e-4, 1.0e-2]}}`")
    valid = known_keys(settings.model)
    parsed = {}
    for key, entry in space.items():
        if "." in str(key):
            raise ConfigError(f"{where}: {key!r}: dotted keys cannot be searched, only top-level settings")
        if key not in valid:
            raise ConfigError(f"{where}: unknown setting {key!r} for {settings.model}{did_you_mean(key, valid)}")
        if key in MOVIEREC_KEYS:
            raise ConfigError(f"{where}: {key!r} cannot be searched: every trial runs on the same data, "
                              f"holdout and outputs (movierec settings)")
        if key in MANAGED:
            raise ConfigError(f"{where}: {key!r} cannot be searched: it is managed by movierec: {MANAGED[key]}")
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(f"{where}.{key}: expected {{distribution: arguments}}, e.g. {{choice: [64, 128]}}, "
                              f"got {entry!r}")
        (name, args), = entry.items()
        if name not in DISTRIBUTIONS:
            raise ConfigError(f"{where}.{key}: unknown distribution {name!r}{did_you_mean(name, DISTRIBUTIONS)}; "
                              f"known: {', '.join(DISTRIBUTIONS)}")
        problem = _distribution_problem(name, args)
        if problem:
            raise ConfigError(f"{where}.{key}: {name}: {problem}")
        if name == "grid" and search != "random":
            raise ConfigError(f"{where}.{key}: grid needs search: random ({search} samples; use choice)")
        if name == "choice" and search != "random" and not all(_is_scalar(v) for v in args):
            raise ConfigError(f"{where}.{key}: {search} chooses among numbers, strings and booleans only; "
                              f"use search: random for list values")
        # the values a trial can get must make a valid run: check every listed value, or both bounds
        # as the distribution samples them (floats but for the integer distributions)
        for value in args if name in LISTED else args[:2] if name in INTEGER else map(float, args[:2]):
            try:
                sampled_settings(settings, {key: value}, None)
            except ConfigError as error:
                floats = "" if name in LISTED | INTEGER else f" ({name} samples floats)"
                raise ConfigError(f"{error}{floats}") from None
        parsed[key] = (name, args)
    return parsed


def _distribution_problem(name, args):
    usage = DISTRIBUTIONS[name][0]
    if name in LISTED:
        return None if isinstance(args, list) and args else f"expected a non-empty list {usage}, got {args!r}"
    if not (isinstance(args, list) and len(args) == usage.count(",") + 1 and all(map(is_number, args))):
        return f"expected {usage} (numbers), got {args!r}"
    if name in INTEGER and not all(map(is_int, args)):
        return f"expected integers {usage}, got {args!r}"
    low, high = args[:2]
    if low >= high:
        return f"low must be below high, got {usage} = {args!r}"
    if name in LOG_SCALE and low <= 0:
        return f"a log scale needs low > 0, got {args!r}"
    if len(args) == 3 and args[2] <= 0:
        return f"step must be > 0, got {args[2]!r}"
    return None


def _parse_scheduler(value, settings, where):
    name, options = (next(iter(value.items())) if isinstance(value, dict) and len(value) == 1 else (value, {}))
    if not isinstance(name, str) or name not in SCHEDULERS:
        raise ConfigError(f"{where}: expected one of {', '.join(SCHEDULERS)} or {{asha: {{option: value}}}}, "
                          f"got {value!r}{did_you_mean(str(name), SCHEDULERS)}")
    options = options or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where}.{name}: expected {{option: value}}, got {options!r}")
    for key in options:
        if key not in SCHEDULERS[name]:
            known = ", ".join(SCHEDULERS[name]) or "none"
            raise ConfigError(f"{where}.{name}: unknown option {key!r}{did_you_mean(key, SCHEDULERS[name])}; "
                              f"known: {known}")
    options = {**SCHEDULERS[name], **options}
    if name == "asha":
        options["max_t"] = options["max_t"] or settings["epochs"]
        for key in ("grace_period", "max_t", "brackets"):
            if not is_int(options[key]) or options[key] < 1:
                raise ConfigError(f"{where}.asha.{key} must be an integer >= 1, got {options[key]!r}")
        if not is_number(options["reduction_factor"]) or options["reduction_factor"] <= 1:
            raise ConfigError(f"{where}.asha.reduction_factor must be a number > 1, "
                              f"got {options['reduction_factor']!r}")
        if options["grace_period"] > options["max_t"]:
            raise ConfigError(f"{where}.asha: grace_period {options['grace_period']} exceeds max_t "
                              f"{options['max_t']} (max_t defaults to epochs)")
    return name, options


def _parse_resources(value, where):
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected {{cpu: n, gpu: share}}, got {value!r}")
    for key in value:
        if key not in RESOURCES:
            raise ConfigError(f"{where}: unknown resource {key!r}{did_you_mean(key, RESOURCES)}; known: cpu, gpu")
    resources = {**TUNE_DEFAULTS["resources_per_trial"], **value}
    if not is_number(resources["cpu"]) or resources["cpu"] <= 0:
        raise ConfigError(f"{where}.cpu must be a number > 0, got {resources['cpu']!r}")
    gpu = resources["gpu"]
    if not is_number(gpu) or not 0 <= gpu <= 1:
        raise ConfigError(f"{where}.gpu must be a share of one GPU in [0, 1] (a run uses one device), got {gpu!r}")
    return resources


def _is_scalar(value):
    return value is None or isinstance(value, (bool, int, float, str))


def param_space(spec):
    """Ray's search space for the searched settings."""
    space = {}
    for key, (name, args) in spec.search_space.items():
        domain = DISTRIBUTIONS[name][1]
        space[key] = domain(args) if name in LISTED else domain(*args)
    return space


def sampled_settings(settings, sampled, output_dir):
    """The settings of one trial: the search's with the sampled values merged, checked like any run."""
    source = settings.sources.get("tune.search_space") or settings.sources.get("tune", "settings")
    values = {key: _plain(value) for key, value in sampled.items()}
    trial = settings.with_values(**values, output_dir=output_dir)
    trial.sources.update({key: f"{source}: tune.search_space.{key}" for key in values})
    check_settings(trial)
    return trial


def _plain(value):
    """A sampled value as a plain Python value (Ray may hand numpy scalars)."""
    return value.item() if hasattr(value, "item") else value


# ----------------------------------------------------------------------------
# One trial, inside a Ray worker


class TrialStopped(Exception):
    """Ray Tune stopped this trial at a report: the scheduler (ASHA), or an interrupted search."""


def run_trial(config, settings, trials_dir):
    """Ray's trainable: the pipeline with the sampled values; one report per holdout evaluation."""
    output = Path(trials_dir) / tune.get_context().get_trial_id()
    trial = sampled_settings(settings, config, str(output))
    if (output / SUMMARY).is_file():  # it finished, but the search was interrupted before Ray knew
        return _report_again(json.loads((output / SUMMARY).read_text()), trial["eval_step"])
    _clear_earlier_attempt(output)  # a trial restarted by --resume starts clean
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
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
    for path in [*_trial_folders(output), *output.parent.glob(staging_path(output, "*").name)]:
        shutil.rmtree(path, ignore_errors=True)


def _trial_dirname(trial):
    return trial.trial_id


# ----------------------------------------------------------------------------
# The driver


@dataclass
class SearchResult:
    output: Path
    trials: pd.DataFrame
    spec: TuneSpec
    best: Path | None  # best.yaml
    interrupted: bool
    honest: dict | None = None  # honest_estimate's result
    retrained: dict | None = None  # the summary of --retrain-best


def resume_settings(output, model=None, config_file=None, overrides=(), quick=False):
    """The settings of the search in output; what the command line gives must not change them."""
    output = Path(output).resolve()
    saved_file = output / SEARCH_FILE
    if not saved_file.is_file() or not tune.Tuner.can_restore(str(output / RAY_DIR)):
        raise ConfigError(f"--resume: {output} holds no search to resume ({SEARCH_FILE} and {RAY_DIR}/ expected)")
    saved = load_settings(config_file=saved_file, overrides=[f"output_dir={output}"])
    given = load_settings(model, config_file or saved_file, [*overrides, f"output_dir={output}"], quick=quick)
    changed = sorted(k for k in set(saved.values) | set(given.values) if saved.values.get(k) != given.values.get(k))
    if changed:
        raise ConfigError(f"--resume: settings differ from the search in {saved_file}: {', '.join(changed)}; "
                          f"resume with `python tune.py --resume --output {output}` alone")
    return saved


def search(settings, address=None, resume=False, retrain_best=False):
    """Run (or, with resume, continue) the search the settings' tune: section describes."""
    spec = parse_tune(settings)
    output = Path(settings["output_dir"] or default_output(f"tune-{settings.model}"))
    settings = settings.with_values(output_dir=str(output))
    if not resume and output.exists():
        raise ConfigError(f"output folder {output} already exists; choose another --output, or add --resume")
    if not address:  # a local Ray has this machine's devices: refuse a missing GPU before Ray starts
        resolve_device(settings["device"])
    prepared = pipeline.prepare_data(settings)
    if resume and _saved_fingerprint(output / SEARCH_FILE) != prepared.fingerprint:
        raise ConfigError(f"--resume: the data changed since the search in {output} started")
    started_ray = start_ray(address)
    on_sigterm = signal.signal(signal.SIGTERM, _as_ctrl_c)  # after Ray's start, which sets one that aborts
    try:
        resources = trial_resources(spec, settings["device"])
        _prebuild_datasets(settings, spec, prepared)
        _pretrain_once(settings, spec, prepared)
        trials_dir = output / TRIALS_DIR
        if not resume:
            trials_dir.mkdir(parents=True)
            _write_search_file(output / SEARCH_FILE, settings, prepared.fingerprint)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, settings=settings, trials_dir=str(trials_dir)), resources
        )
        logger.info("searching %s: %s trials, %s per trial, output %s", settings.model, spec.trial_count(),
                    resources, output)
        if resume:
            tuner = tune.Tuner.restore(str(output / RAY_DIR), trainable, resume_unfinished=True, resume_errored=False)
        else:
            tuner = tune.Tuner(trainable, param_space=param_space(spec), tune_config=_tune_config(spec, settings),
                               run_config=_run_config(output))
        results = tuner.fit()
    finally:
        signal.signal(signal.SIGTERM, on_sigterm)
        if started_ray:
            ray.shutdown()

    # the saved state decides: what --resume would run is unfinished, or not even created yet
    saved = {trial.trial_id: trial for trial in tune.ExperimentAnalysis(str(output / RAY_DIR)).trials}
    unfinished = {key for key, trial in saved.items() if trial.status not in ("TERMINATED", "ERROR")}
    interrupted = bool(unfinished) or len(saved) < spec.trial_count()
    configs = {key: trial.config for key, trial in saved.items()}  # also of trials that never started
    frame = trials_frame(results, configs, spec, trials_dir, unfinished)
    honest = honest_estimate(frame, spec, settings["seed"])
    write_atomic(output / TRIALS_CSV, lambda path: frame.to_csv(path, index=False))
    plot_trials(frame, spec, settings.model, output / TRIALS_PLOT)
    best = None
    if not interrupted and frame[spec.metric].notna().any():
        best = write_best(frame, configs, spec, settings, output / BEST_FILE, honest)
    result = SearchResult(output, frame, spec, best, interrupted, honest)
    if retrain_best and best is not None:
        best_settings = load_settings(config_file=best, overrides=[f"output_dir={output / BEST_RUN}"])
        result.retrained = pipeline.run(best_settings)
    return result


def _as_ctrl_c(signum, frame):
    """SIGTERM (`timeout`, job schedulers) does what Ctrl-C does: Ray Tune's handler saves a resumable search."""
    signal.getsignal(signal.SIGINT)(signal.SIGINT, frame)


def start_ray(address=None):
    """Attach to the cluster at address, or start a local Ray; False when Ray was already up."""
    if ray.is_initialized():
        return False
    # trials import movierec from this checkout (on a cluster: the same path on every node)
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}}
    if not address:  # "local": a new runtime, never a cluster someone else started on this machine
        ray.init(address="local", include_dashboard=False, runtime_env=runtime_env)
        return True
    try:
        ray.init(address=address, runtime_env=runtime_env)
    except (ConnectionError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[-1]
        raise ConfigError(f"--address {address}: cannot attach to the Ray cluster: {reason} (a cluster with token "
                          f"authentication also needs RAY_AUTH_MODE=token and its token)") from None
    return True


def trial_resources(spec, device, nodes=None):
    """The CPU and GPU share of each trial, fitted to the device setting and the cluster's nodes
    (their Ray resources; default: the running cluster's)."""
    if nodes is None:
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    most_cpus = max(node.get("CPU", 0) for node in nodes)
    most_gpus = max(node.get("GPU", 0) for node in nodes)
    cpu, gpu = spec.resources["cpu"], spec.resources["gpu"]
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
        logger.warning("trials run on CPU though the Ray cluster has GPUs: tune.resources_per_trial.gpu is 0; "
                       "set it (e.g. 0.25) to use them")
    return {"cpu": cpu, "gpu": gpu}


def _tune_config(spec, settings):
    seed = settings["seed"]  # the search's samples are as repeatable as its trials
    limit = spec.max_concurrent_trials
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        algorithm = OptunaSearch(seed=seed)
    elif spec.search == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        algorithm = HyperOptSearch(random_state_seed=seed)
    else:
        # the generator takes the limit itself: Ray ignores max_concurrent_trials next to a generator
        algorithm = tune.search.BasicVariantGenerator(random_state=seed, max_concurrent=limit or 0)
        limit = None
    if spec.scheduler == "asha":
        # epochs as the time unit; stop_last_trials=False: a trial that reaches max_t ends by itself
        scheduler = tune.schedulers.ASHAScheduler(time_attr="epoch", stop_last_trials=False, **spec.scheduler_options)
    else:
        scheduler = tune.schedulers.FIFOScheduler()
    return tune.TuneConfig(
        metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples, search_alg=algorithm, scheduler=scheduler,
        max_concurrent_trials=limit, reuse_actors=True,  # a worker imports torch once
        trial_name_creator=_trial_dirname, trial_dirname_creator=_trial_dirname,
    )


def _run_config(output):
    return tune.RunConfig(
        name=RAY_DIR, storage_path=str(output),
        failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),  # a failed trial is recorded; go on
        verbose=1,
    )


def _prebuild_datasets(settings, spec, prepared):
    """Build the validation dataset caches before trials start: the search's own, and one per listed value
    of a searched setting that building the dataset reads (MAX_ITEM_LIST_LENGTH, ...)."""

    def build(**values):
        variant = settings.with_values(device="cpu", **values)  # the driver may have no GPU; datasets do not care
        with tempfile.TemporaryDirectory() as scratch:
            config = ReadRecorder(recbole_config(variant, prepared.data_path, prepared.valid_name, scratch))
            load_dataset(config)
        gc.collect()
        return config.reads

    logger.info("dataset cache for the trials ...")
    reads = build()
    changing = {key: entry for key, entry in spec.search_space.items() if key in reads}
    if any(name not in LISTED for name, _ in changing.values()):
        logger.info("trials build their own dataset caches: %s sampled from a range", ", ".join(changing))
        return
    for values in itertools.product(*(args for _, args in changing.values())) if changing else ():
        logger.info("dataset cache for the trials%s ...", "".join(f", {k}={v}" for k, v in zip(changing, values)))
        build(**dict(zip(changing, values)))


def _pretrain_once(settings, spec, prepared):
    """S3Rec: pretrain before the trials, so that trials running side by side share one cached checkpoint
    instead of each pretraining; a trial whose values change what pretraining reads pretrains its own."""
    if not downstream_models(settings.model):
        return
    with tempfile.TemporaryDirectory() as scratch:
        pretrain(settings, prepared, scratch)
    own = [key for key, (name, args) in spec.search_space.items()
           if any(find_pretrained(sampled_settings(settings, {key: value}, None), prepared) is None
                  for value in (args if name in LISTED else args[:2]))]
    if own:
        logger.info("trials pretrain for themselves (cached per value): pretraining reads %s", ", ".join(own))


def _write_search_file(path, settings, fingerprint):
    values = {k: v for k, v in settings.values.items() if k != "output_dir"}
    text = (f"# the settings of a tune.py search; data fingerprint {fingerprint}\n"
            + yaml.safe_dump(values, sort_keys=False))
    write_atomic(path, lambda tmp: tmp.write_text(text))


def _saved_fingerprint(path):
    found = re.search(r"data fingerprint (\w+)", path.read_text().splitlines()[0])
    return found.group(1) if found else None


# ----------------------------------------------------------------------------
# Results: trials.csv, the table, the plot, best.yaml


def trials_frame(results, configs, spec, trials_dir, unfinished=()):
    """One row per trial, best first: state, best metric, epochs, seconds (to the last report), sampled
    values, error."""
    rows = []
    for result in results:
        trial_id = Path(result.path).name
        history = result.metrics_dataframe
        history = history if history is not None and spec.metric in history else pd.DataFrame()
        folder = trials_dir / trial_id
        state = "INTERRUPTED" if trial_id in unfinished else _state(result, folder)
        row = {"trial": trial_id, "state": state, spec.metric: float("nan"),
               "best_epoch": None, "epochs": None, "seconds": None}
        if not history.empty:
            scores = history[spec.metric]
            best = scores.idxmax() if spec.mode == "max" else scores.idxmin()
            row.update({spec.metric: scores[best], "best_epoch": int(history["epoch"][best]),
                        "epochs": int(history["epoch"].iloc[-1]),
                        "seconds": round(float(history["trial_seconds"].iloc[-1]), 2)})
        row.update({key: _cell(configs[trial_id].get(key)) for key in spec.search_space})
        row["error"] = _error_line(result.error) if result.error else ""
        row["output"] = next((str(p) for p in _trial_folders(folder) if p.exists()), "")
        rows.append(row)
    frame = pd.DataFrame(rows).astype({"best_epoch": "Int64", "epochs": "Int64"}).sort_values("trial")
    return frame.sort_values(spec.metric, ascending=spec.mode == "min", na_position="last", kind="stable")


def honest_estimate(frame, spec, seed):
    """The best trial chosen on one half of the holdout users and scored on the other, both ways,
    from the trials' per-user scores. Adds to frame (in place) each trial's metric on either half,
    the halves that chose it, and the honest number on the best trial's row. None without scores."""
    per_user = {}
    for trial, folder in zip(frame["trial"], frame["output"]):
        users = read_holdout_users(folder) if folder else None
        if users is not None and spec.metric in users:
            per_user[trial] = users[spec.metric]
    if not per_user:
        return None
    scores = pd.DataFrame(dict(sorted(per_user.items()))).dropna()  # trials in id order: ties go to the first
    choice = cross_fitted_choice(scores, seed, spec.mode)
    half_a, half_b, honest = f"{spec.metric} half A", f"{spec.metric} half B", f"{spec.metric} honest"
    frame[half_a] = frame["trial"].map(choice["means"]["A"])
    frame[half_b] = frame["trial"].map(choice["means"]["B"])
    frame["chosen on"] = ["+".join(h for h in "AB" if choice["chosen"][h] == trial) for trial in frame["trial"]]
    best = frame.dropna(subset=[spec.metric]).index[0]
    frame[honest] = float("nan")
    frame.loc[best, honest] = choice["honest"]
    return {"metric": spec.metric, "fitted": float(frame.loc[best, spec.metric]), "honest": choice["honest"],
            "trial": frame.loc[best, "trial"], "trials": len(per_user), "users": choice["users"], "seed": seed}


def describe_honest(honest):
    """The fitted and the honest number of a search, in words."""
    return (f"{honest['metric']} {honest['fitted']:.4f} fitted (the best, chosen on the users it is scored "
            f"on); {honest['honest']:.4f} honest (the best on one half of the holdout users, scored on the other "
            f"half, both ways; {honest['trials']} settings compared, halves of {honest['users'][0]} and "
            f"{honest['users'][1]} users)")


def _trial_folders(folder):
    return [*kept_folders(folder), folder.with_name(folder.name + STOPPED)]


def _state(result, folder):
    if result.error:
        return "ERROR"
    if (folder / SUMMARY).is_file():
        return "COMPLETED"
    if folder.with_name(folder.name + STOPPED).is_dir():
        return "STOPPED"  # by the scheduler (ASHA), before its last epoch
    return "UNFINISHED"


def _cell(value):
    return value if _is_scalar(value) else yaml.safe_dump(value, default_flow_style=True).strip()


def _error_line(error):
    """The original exception of a failed trial, on one line."""
    cause = getattr(error, "cause", None)  # Ray wraps the trial's exception
    return error_line(cause if isinstance(cause, BaseException) else error)


def format_table(frame, spec):
    """The trials as printed at the end of a search, best first."""
    forms = {"seconds": "{:.1f}", **{key: "{:g}" for key in spec.search_space},
             **{column: "{:.4f}" for column in frame.columns if str(column).startswith(spec.metric)}}

    def cell(value, form):
        if not isinstance(value, (list, dict)) and pd.isna(value):
            return ""
        return form.format(value) if is_number(value) else str(value)

    shown = pd.DataFrame({column: [cell(v, forms.get(column, "{}")) for v in frame[column]]
                          for column in frame.columns if column != "output"})
    shown["error"] = shown["error"].str.slice(0, 70)
    return shown.to_string(index=False)


def write_best(frame, configs, spec, settings, path, honest=None):
    """best.yaml: the search's settings with the best trial's values; run.py reproduces the trial."""
    best = frame.dropna(subset=[spec.metric]).iloc[0]
    searched = {key: _plain(configs[best["trial"]][key]) for key in spec.search_space}
    left_out = {*searched, "model", "tune", "quick", "output_dir"}  # a search's, not a run's
    rest = {"model": settings.model, **{k: v for k, v in settings.values.items() if k not in left_out}}
    header = (
        f"# the best trial of the search in {path.parent}\n"
        f"# trial {best['trial']}: holdout {spec.metric} {best[spec.metric]:.4f} at epoch {best['best_epoch']}\n"
        + (f"# {describe_honest(honest)}\n" if honest else "")
        + f"# reproduce it: python run.py --config {path}\n"
    )
    text = (header + "# searched\n" + yaml.safe_dump(searched, sort_keys=False)
            + "# the other settings of the search\n" + yaml.safe_dump(rest, sort_keys=False))
    write_atomic(path, lambda tmp: tmp.write_text(text))
    return path


def plot_trials(frame, spec, model, path):
    """The metric per trial and against each searched value (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(spec.search_space)
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(4.2 * (1 + len(keys)), 3.6), squeeze=False)
    axes = axes[0]
    order = frame.sort_values("trial").reset_index(drop=True)
    colours = order["state"].map({"COMPLETED": "tab:blue", "STOPPED": "tab:gray", "ERROR": "tab:red"}).fillna("k")
    axes[0].bar(range(len(order)), order[spec.metric].fillna(0), color=colours)
    failed = order.index[order["state"] == "ERROR"]
    axes[0].scatter(failed, [0] * len(failed), marker="x", color="tab:red", zorder=3, clip_on=False)
    axes[0].set_xticks(range(len(order)), [t[-5:] for t in order["trial"]], rotation=90, fontsize=7)
    axes[0].set(title=f"{model}: {spec.metric} per trial", xlabel="trial (blue done, grey stopped, red failed)",
                ylabel=spec.metric)
    scored = frame.dropna(subset=[spec.metric])
    for ax, key in zip(axes[1:], keys):
        values = scored[key]
        if all(is_number(v) for v in values):
            ax.scatter(values, scored[spec.metric], color="tab:blue")
            if spec.search_space[key][0] in LOG_SCALE or (values.min() > 0 and values.max() >= 100 * values.min()):
                ax.set_xscale("log")
        else:  # categories: lists, strings, booleans
            labels = sorted({str(v) for v in values})
            ax.scatter([labels.index(str(v)) for v in values], scored[spec.metric], color="tab:blue")
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        ax.set(title=f"{spec.metric} against {key}", xlabel=key)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
