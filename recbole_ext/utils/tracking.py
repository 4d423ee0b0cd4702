"""Experiment tracking: runs, tune trials and blends logged to MLflow or Weights & Biases (docs/tracking.md).

The ``tracking:`` settings say where (config/checks.py checks them: a backend whose package is missing is refused
with its pip command). ``connect`` checks, before any work, that the backend can log; a run's ``Tracker``
starts once its data is checked and logs the settings as parameters, each holdout evaluation as
``valid/...`` metrics by epoch, the holdout scores with their interval, parts and activity groups, and at
the end the files of its folder (or of the folder a run that stopped early keeps). Trials log from their Ray
worker through the same pipeline as run.py (Ray Tune's logger callbacks would log only what a trial
reports, and Ray's folder instead of the trial's). Neither package is imported unless asked for.
"""

import os
import re
import shutil
import socket
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

from recbole_ext import ConfigError
from recbole_ext.evaluator.metrics import METRICS, RECALL

BACKENDS = {"none": None, "mlflow": ("mlflow", "mlflow-skinny"), "wandb": ("wandb", "wandb")}  # module, pip name
KEYS = ("backend", "project", "group", "uri", "dir")
MLFLOW_DEFAULT_URI = "sqlite:///mlflow.db"  # MLflow 3's own default: a database in the directory the command runs from
CONNECT_TIMEOUT = 10  # seconds a tracking server has to accept a connection before any work
NOT_PARAMETERS = {"quick", "tune", "tracking"}  # settings that are not the run's own


class Stopped(Exception):
    """A run stopped on purpose before it finished (Ray Tune's scheduler stopped a trial): logged as KILLED."""


def resolved(tracking):
    """The section with where to log made absolute: trials and blend members log from Ray's workers, which run
    in other folders."""
    tracking = dict(tracking)
    if tracking["backend"] == "mlflow":
        tracking["uri"] = absolute_uri(tracking["uri"] or os.environ.get("MLFLOW_TRACKING_URI") or MLFLOW_DEFAULT_URI)
    elif tracking["backend"] == "wandb":
        tracking["dir"] = str(Path(tracking["dir"] or os.environ.get("WANDB_DIR") or ".").expanduser().resolve())
    return tracking


def absolute_uri(uri):
    """An MLflow URI of a local store (sqlite:///FILE, file:FOLDER or a bare folder) with an absolute path."""
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).expanduser().resolve())
    if uri.startswith("file:"):
        return Path(uri.removeprefix("file:").removeprefix("//")).expanduser().resolve().as_uri()
    if not re.match(r"^[a-z][a-z0-9+.-]*:", uri):  # no scheme: a folder
        return str(Path(uri).expanduser().resolve())
    return uri


def in_group(settings, name):
    """settings whose runs log in the group name unless the user named one (a search's trials, a blend's runs)."""
    tracking = settings["tracking"]
    return settings.with_values(tracking={**tracking, "group": tracking["group"] or name})


def connect(settings):
    """Before any work: MLflow's store answers and holds the project's experiment (made here: runs starting side
    by side would race to make it); W&B has a login or runs offline. ConfigError otherwise."""
    tracking = settings["tracking"]
    where = settings.sources.get("tracking.backend", "settings")
    if tracking["backend"] == "wandb" and Path(tracking["dir"]).exists() and not Path(tracking["dir"]).is_dir():
        raise ConfigError(
            f"{settings.sources.get('tracking.dir', where)}: tracking.dir: {tracking['dir']} is a file, expected a folder"
        )
    if tracking["backend"] == "mlflow":
        import mlflow

        uri = tracking["uri"]
        if uri in ("sqlite://", "sqlite:///:memory:"):  # MLflow takes it, and its records vanish with the process
            raise ConfigError(
                f"{where}: tracking: MLflow's {uri} is a database in memory, which keeps nothing; "
                "use sqlite:///FILE or a server's http:// address"
            )
        problem = unreachable(uri)
        if problem:
            raise ConfigError(f"{where}: tracking: MLflow cannot log to {uri}: {problem}")
        try:
            client = mlflow.MlflowClient(tracking["uri"])
            if client.get_experiment_by_name(tracking["project"]) is None:
                client.create_experiment(tracking["project"], artifact_location=_artifact_location(tracking["uri"]))
        except Exception as error:  # MLflow's own errors, a database or a server that cannot be reached
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"{where}: tracking: MLflow cannot log to {tracking['uri']}: {reason}") from None
    elif tracking["backend"] == "wandb" and os.environ.get("WANDB_MODE") not in ("offline", "disabled"):
        import wandb

        try:
            wandb.login(verify=False)  # asks for the key on a terminal; elsewhere fails without one
        except wandb.errors.UsageError as error:
            raise ConfigError(
                f"{where}: tracking: W&B cannot log: {error} (or set WANDB_API_KEY, or WANDB_MODE=offline "
                f"to log locally and `wandb sync` later)"
            ) from None
        server = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
        problem = unreachable(server)
        if problem:
            raise ConfigError(f"{where}: tracking: W&B cannot log to {server} (WANDB_BASE_URL): {problem}")


def unreachable(uri, timeout=CONNECT_TIMEOUT):
    """Why nothing answers at an http(s) address within timeout seconds (the clients retry for minutes
    first), or None: answered, or not an address on a network."""
    address = urllib.parse.urlsplit(uri)
    if address.scheme not in ("http", "https") or not address.hostname:
        return None
    port = address.port or (443 if address.scheme == "https" else 80)
    try:
        socket.create_connection((address.hostname, port), timeout=timeout).close()
    except OSError as error:
        return f"nothing answers at {address.hostname}:{port} within {timeout} s ({error.strerror or error})"
    return None


def _artifact_location(uri):
    """A local database's files go to mlruns/ beside it (MLflow's default is mlruns/ in the directory the
    experiment is made from); a server decides for itself (None)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlruns").as_uri()
    return None


@contextmanager
def tracked(settings, folder, kind):
    """A Tracker for the run writing folder (kind: run, trial, blend), ended when the block ends: with the
    files of folder, or of the folder an exception says was kept (run_folder's kept_in)."""
    tracker = Tracker(settings["tracking"], folder.name, kind)
    try:
        yield tracker
    except BaseException as error:
        status = "KILLED" if isinstance(error, (KeyboardInterrupt, Stopped)) else "FAILED"
        tracker.end(getattr(error, "kept_in", None), status)
        raise
    tracker.end(folder, "FINISHED")


class Tracker:
    """One run in the tracking backend, started by start(); until then (and with backend none) it logs nothing."""

    def __init__(self, tracking, name, kind):
        self.tracking, self.name, self.kind = tracking, name, kind
        self.backend = None

    def start(self, params):
        backend = {"mlflow": MLflowRun, "wandb": WandbRun}.get(self.tracking["backend"])
        if backend:
            self.backend = backend(self.tracking, self.name, self.kind, flat(params))

    def log(self, metrics, step=None):
        """Numbers by name ('recall@10 last:0.4' is logged as 'recall_at_10 last_0.4': MLflow allows no '@' nor ':'); step: the epoch."""
        if self.backend:
            self.backend.log(
                {name.replace("@", "_at_").replace(":", "_"): value for name, value in metrics.items()}, step
            )

    def end(self, folder, status):
        """The files of folder (None: no folder) saved with the run, which ends with status."""
        if self.backend:
            if folder is not None:
                self.backend.save(Path(folder), folder_files(folder))
            self.backend.end(status)
            self.backend = None


def folder_files(folder):
    """The files under folder, relative to it; links are left out (a blend's members/: runs of their own)."""
    found = []
    for root, _, names in os.walk(folder):  # does not enter linked folders
        found += [Path(root, name).relative_to(folder) for name in names if not Path(root, name).is_symlink()]
    return sorted(found)


def run_params(settings, **extra):
    """A run's parameters: its settings (not its search, quick: block or tracking) and what extra says."""
    return {**{k: v for k, v in settings.values.items() if k not in NOT_PARAMETERS}, **extra}


def holdout_metrics(holdout, detail, prefix="holdout"):
    """The holdout scores as metrics: the means, the recall interval, each part and activity group."""
    low, high = detail["interval"][RECALL]
    metrics = {**{f"{prefix}/{m}": holdout[m] for m in METRICS}, f"{prefix}/users": detail["users"]}
    metrics |= {f"{prefix}/{RECALL}_low": low, f"{prefix}/{RECALL}_high": high}
    for name, scores in {**detail["parts"], **detail["activity"]}.items():
        metrics |= {f"{prefix}/{name}/{m}": scores[m] for m in (*METRICS, "users")}
    return metrics


def flat(values, prefix=""):
    """Nested settings as one level of dotted names: holdout.seed, load_col.inter."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


class MLflowRun:
    def __init__(self, tracking, name, kind, params):
        import mlflow
        from mlflow.entities import Param

        self.client = mlflow.MlflowClient(tracking["uri"])
        experiment = self.client.get_experiment_by_name(tracking["project"]).experiment_id  # made by connect
        tags = {"kind": kind, **({"group": tracking["group"]} if tracking["group"] else {})}
        self.run_id = self.client.create_run(experiment, run_name=name, tags=tags).info.run_id
        self.client.log_batch(self.run_id, params=[Param(key, str(value)) for key, value in params.items()])

    def log(self, metrics, step):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, step or 0) for key, value in metrics.items() if value is not None]
        self.client.log_batch(self.run_id, metrics=entries)

    def save(self, folder, files):
        for path in files:
            parent = str(path.parent)
            self.client.log_artifact(self.run_id, str(folder / path), None if parent == "." else parent)

    def end(self, status):
        self.client.set_terminated(self.run_id, status)


class WandbRun:
    def __init__(self, tracking, name, kind, params):
        import wandb

        Path(tracking["dir"]).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=tracking["project"],
            group=tracking["group"],
            job_type=kind,
            name=name,
            config=params,
            dir=tracking["dir"],
            settings=wandb.Settings(console="off"),  # the run's log is saved as a file, run.log
        )

    def save(self, folder, files):
        for path in files:  # in the run's files folder, uploaded when it ends (offline: by `wandb sync`)
            target = Path(self.run.dir) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(folder / path, target)  # no copy, and kept should the run folder be moved or removed
            except OSError:  # another filesystem
                shutil.copy2(folder / path, target)

    def log(self, metrics, step):
        if step is None:
            self.run.summary.update(metrics)
        else:
            self.run.log(metrics, step=step)

    def end(self, status):
        self.run.finish(exit_code={"FINISHED": 0, "FAILED": 1, "KILLED": 130}[status])
