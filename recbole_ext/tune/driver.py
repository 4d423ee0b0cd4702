"""The driver of a search: prepare once, start Ray, run (or resume) the trials, write the results.

The driver prepares the data, the dataset caches and (S3Rec) the pretraining
once; trials reuse them and depend neither on the working directory (Ray
changes it) nor on sys.argv. Ray Tune's experiment state in ray/ and the
settings in search.yaml let ``--resume`` finish an interrupted search without
repeating a trial.
"""

import gc
import itertools
import logging
import os
import re
import signal
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import ray
from ray import tune
from ray._private import services

import yaml
from recbole_ext import ConfigError
from recbole_ext.config.settings import load_settings
from recbole_ext.data.cache import ReadRecorder
from recbole_ext.data.dataset import load_dataset
from recbole_ext.quick_start import pipeline
from recbole_ext.trainer.pretrain import downstream_models, find_pretrained, pretrain
from recbole_ext.trainer.recbole_config import recbole_config, resolve_device
from recbole_ext.tune.results import (
    BEST_FILE,
    TRIALS_CSV,
    TRIALS_PLOT,
    honest_estimate,
    plot_trials,
    trials_frame,
    write_best,
)
from recbole_ext.tune.space import LISTED, TuneSpec, param_space, parse_tune, sampled_settings
from recbole_ext.tune.trial import STOPPED, run_trial, trial_dirname, trial_resources
from recbole_ext.utils import tracking
from recbole_ext.utils.files import write_atomic
from recbole_ext.utils.run_folder import INTERRUPTED, default_output

logger = logging.getLogger("movierec.tune")


ROOT = Path(__file__).resolve().parents[2]  # the checkout: trials import movierec from it
SEARCH_FILE = "search.yaml"
RAY_DIR = "ray"
TRIALS_DIR = "trials"
BEST_RUN = "best"


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
        raise ConfigError(
            f"--resume: settings differ from the search in {saved_file}: {', '.join(changed)}; "
            f"resume with `python tune.py --resume --output {output}` alone"
        )
    return saved


def search(settings, address=None, resume=False, retrain_best=False):
    """Run (or, with resume, continue) the search the settings' tune: section describes."""
    spec = parse_tune(settings)
    output = Path(settings["output_dir"] or default_output(f"tune-{settings.model}"))
    settings = settings.with_values(output_dir=str(output))
    if not resume and output.exists():
        raise ConfigError(f"output folder {output} already exists; choose another --output, or add --resume")
    # a local Ray has this machine's devices: a missing GPU (and UserEASE's memory) is refused before Ray starts
    device = None if address else resolve_device(settings)
    if device:
        _check_devices(settings, spec)
    tracking.connect(settings)
    prepared = pipeline.prepare_data(settings)
    if device:
        pipeline.check_prepared(settings, prepared, device)
    if resume and _saved_fingerprint(output / SEARCH_FILE) != prepared.fingerprint:
        raise ConfigError(f"--resume: the data changed since the search in {output} started")
    started_ray = start_ray(address)
    on_sigterm = signal.signal(signal.SIGTERM, _as_ctrl_c)  # after Ray's start, which sets one that aborts
    try:
        resources = trial_resources(spec.resources, settings["device"])
        _prebuild_datasets(settings, spec, prepared)
        _pretrain_once(settings, spec, prepared)
        trials_dir = output / TRIALS_DIR
        if not resume:
            trials_dir.mkdir(parents=True)
            _write_search_file(output / SEARCH_FILE, settings, prepared.fingerprint)
        trial_settings = tracking.in_group(settings, output.name)  # the trials are logged as one group
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, settings=trial_settings, trials_dir=str(trials_dir)), resources
        )
        logger.info(
            "searching %s: %s trials, %s per trial, output %s", settings.model, spec.trial_count(), resources, output
        )
        if resume:
            tuner = tune.Tuner.restore(str(output / RAY_DIR), trainable, resume_unfinished=True, resume_errored=False)
        else:
            failures = tune.FailureConfig(max_failures=0, fail_fast=False)  # a failed trial is recorded; go on
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(spec),
                tune_config=_tune_config(spec, settings),
                run_config=tune.RunConfig(name=RAY_DIR, storage_path=str(output), failure_config=failures, verbose=1),
            )
        results = tuner.fit()
    finally:
        signal.signal(signal.SIGTERM, on_sigterm)
        if started_ray:
            ray.shutdown()

    # the saved state decides: what --resume would run is unfinished, or not even created yet
    saved = {trial.trial_id: trial for trial in tune.ExperimentAnalysis(str(output / RAY_DIR)).trials}
    unfinished = {key for key, trial in saved.items() if trial.status not in ("TERMINATED", "ERROR")}
    interrupted = bool(unfinished) or len(saved) < spec.trial_count()
    for trial_id in unfinished:  # stopped by the interruption, not by the scheduler: kept as the docs say
        stopped = trials_dir / f"{trial_id}{STOPPED}"
        if stopped.is_dir():
            stopped.replace(trials_dir / f"{trial_id}{INTERRUPTED}")
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
        result.retrained = pipeline.run(tracking.in_group(best_settings, output.name))
    return result


def _check_devices(settings, spec):
    """Each listed value of a searched amp or device on this machine (fp16 on a CPU), as a run checks its own."""
    for key, (name, args) in spec.search_space.items():
        if key in ("amp", "device") and name in LISTED:
            for value in args:
                resolve_device(sampled_settings(settings, {key: value}, None))


def _as_ctrl_c(signum, frame):
    """SIGTERM (`timeout`, job schedulers) does what Ctrl-C does: Ray Tune's handler saves a resumable search."""
    signal.getsignal(signal.SIGINT)(signal.SIGINT, frame)


def start_ray(address=None):
    """Attach to the cluster at address, or start a local Ray; False when Ray was already up.

    ray.init installs a SIGTERM handler that exits the process: a handler the command set itself
    (stop_on_signals) is put back, so that SIGTERM still stops it the way Ctrl-C does.
    """
    if ray.is_initialized():
        return False
    on_sigterm = signal.getsignal(signal.SIGTERM)
    # trials import movierec from this checkout (on a cluster: the same path on every node)
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}}
    if not address:  # "local": a new runtime, never a cluster someone else started on this machine
        with _ray_processes_in_their_own_group():
            ray.init(address="local", include_dashboard=False, runtime_env=runtime_env)
    else:
        try:
            ray.init(address=address, runtime_env=runtime_env)
        except (ConnectionError, RuntimeError) as error:
            reason = str(error).strip().splitlines()[-1]
            raise ConfigError(
                f"--address {address}: cannot attach to the Ray cluster: {reason} (a cluster with "
                f"token authentication also needs RAY_AUTH_MODE=token and its token)"
            ) from None
    if callable(on_sigterm):
        signal.signal(signal.SIGTERM, on_sigterm)
    return True


@contextmanager
def _ray_processes_in_their_own_group():
    """Ray's processes started meanwhile (its GCS, raylet, agents) get a process group of their own.

    `timeout`, SLURM and Kubernetes send SIGTERM to the command's whole process group: in it, Ray's GCS
    would die at once while the driver, stopping as on Ctrl-C, waits 60 s for it to save the search, then
    fails. Out of it, only the driver receives the signal; it saves the search and shuts its Ray down.
    They still end with the driver (Ray's kernel fate sharing); on Windows Ray does this itself."""
    plain = services.ConsolePopen

    class OwnGroup(plain):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, process_group=0, **kwargs)

    services.ConsolePopen = OwnGroup
    try:
        yield
    finally:
        services.ConsolePopen = plain


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
        metric=spec.metric,
        mode=spec.mode,
        num_samples=spec.num_samples,
        search_alg=algorithm,
        scheduler=scheduler,
        max_concurrent_trials=limit,
        reuse_actors=True,  # a worker imports torch once
        trial_name_creator=trial_dirname,
        trial_dirname_creator=trial_dirname,
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
    own = [
        key
        for key, (name, args) in spec.search_space.items()
        if any(
            find_pretrained(sampled_settings(settings, {key: value}, None), prepared) is None
            for value in (args if name in LISTED else args[:2])
        )
    ]
    if own:
        logger.info("trials pretrain for themselves (cached per value): pretraining reads %s", ", ".join(own))


def _write_search_file(path, settings, fingerprint):
    values = {k: v for k, v in settings.values.items() if k != "output_dir"}
    text = f"# the settings of a tune.py search; data fingerprint {fingerprint}\n" + yaml.safe_dump(
        values, sort_keys=False
    )
    write_atomic(path, lambda tmp: tmp.write_text(text))


def _saved_fingerprint(path):
    found = re.search(r"data fingerprint (\w+)", path.read_text().splitlines()[0])
    return found.group(1) if found else None
