"""Train a recipe's members side by side on Ray and blend them into one submission.

    python -m recbole_ext.blend RECIPE.yaml [--data RAW_DIR] [--output DIR] [--runs DIR] [--quick]
                                [--address auto|HOST:PORT] [--device auto|cpu|cuda] [--max-parallel N]
                                [key=value ...]

A recipe (yaml/blends/*.yaml) names its members and the blend:

    members:                          # name: member; weights follow this order
      EASE:
        config: yaml/ease.yaml        # a model yaml or a search's best.yaml (or model: NAME)
        set: {reg_weight: 450}        # settings over it; dotted keys reach inside
      SASRec:
        config: yaml/sasrec.yaml
        seeds: [1, 2, 3, 4]           # one run per seed, their lists averaged
    blend: {method: score, weights: auto, seed: 0, depth: ~}   # recbole_ext.ensemble's options
    settings: {}                      # settings for every member
    quick:                            # --quick: changes to the recipe above (a member set to ~ is left out)
      members: {SASRec: {seeds: [1]}}

A member's settings layer as run.py's: base < its yaml < (with --quick, the yaml's quick: block)
< the recipe's settings < the member's set < key=value of the command line. Each run the
recipe asks for is one Ray task with the member's tune.resources_per_trial (fractional GPUs
pack members on one GPU; without a GPU the share is dropped, as for tune trials). A run is
kept in the runs folder (--runs, default: blend-runs beside the output) under its member name
and a key: the hash of its settings (without where and how it runs or logs) and the prepared
data's fingerprint. A run with that key already finished is reused, not trained again.

A member whose runs all fail is left out of the blend with a warning (its error and log are
named; the summary lists it); with fewer than two members left nothing is blended (exit 1).
The blend is recbole_ext.ensemble's, on the members' run folders; the output folder (written
under a temporary name, then moved into place, replacing an earlier blend there) holds
submission.csv, summary.json, holdout_users.csv, report.txt and members/<name>, a link to each
member's run. Exit codes: 0 done, 1 fewer than two members finished or the blend failed,
2 bad input (one `error:` line, before Ray starts), 130 interrupted.
"""

import argparse
import hashlib
import io
import json
import logging
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import ray

from atomic_data import Prepared, RawDataError
from recbole_ext import ConfigError, ensemble, fusion, pipeline, run_folder
from recbole_ext import tune as tuning
from recbole_ext.config import did_you_mean, is_int, is_number, load_settings, read_yaml
from recbole_ext.files import json_text, remove_dead_partials, staging_path
from recbole_ext.metrics import K, holdout_detail, mean_scores, part_scores
from recbole_ext.recbole_config import resolve_device
from recbole_ext.tune.space import TUNE_DEFAULTS, parse_resources
from recbole_ext.tune.trial import trial_resources, use_assigned_cpus

logger = logging.getLogger("movierec.blend")

RECIPE_KEYS = ("members", "blend", "settings", "quick")
MEMBER_KEYS = ("config", "model", "set", "seeds")
BLEND_DEFAULTS = {"method": "score", "weights": "auto", "seed": 0, "depth": None}
# settings that say where a run reads, writes or logs, or how it is scheduled: not part of a run's key
# (the data is, through the prepared data's fingerprint)
NOT_IN_KEY = {"output_dir", "data", "data_dir", "show_progress", "state", "quick", "tune", "predict_batch_users"}
MEMBERS_DIR = "members"
REPORT = "report.txt"
NAME = re.compile(r"[A-Za-z0-9][\w.-]*")


class BlendError(RuntimeError):
    """Training went through, but the blend cannot be made (too few members finished)."""


# ----------------------------------------------------------------------------
# The recipe


@dataclass
class MemberSpec:
    name: str
    config: str | None
    model: str | None
    set: dict
    seeds: list | None


@dataclass
class Recipe:
    path: Path
    members: list  # MemberSpec, in the recipe's order
    method: str
    weights: object  # "auto" or a list of numbers, one per member
    seed: int
    depth: int | None
    settings: dict  # for every member
    quick: bool


def read_recipe(path, quick=False):
    """The recipe at path (with its quick: changes when quick), checked; ConfigError names the file and key."""
    path = Path(path)
    values = read_yaml(path)
    _check_section(values, RECIPE_KEYS, f"{path}: ")
    if quick:
        changes = values.get("quick") or {}
        _check_section(changes, RECIPE_KEYS[:-1], f"{path}: quick.")
        values = _with_changes(values, changes, f"{path}: quick.")
    members = values.get("members")
    if not isinstance(members, dict) or len(members) < 2:
        raise ConfigError(f"{path}: members must map at least two member names to their settings, got {members!r}")
    specs = [_member(name, entry, path) for name, entry in members.items()]
    blend = values.get("blend") or {}
    _check_section(blend, BLEND_DEFAULTS, f"{path}: blend.")
    blend = {**BLEND_DEFAULTS, **blend}
    if blend["method"] not in fusion.METHODS:
        raise ConfigError(f"{path}: blend.method must be one of {', '.join(fusion.METHODS)}, got {blend['method']!r}")
    weights = blend["weights"]
    if weights != "auto" and not (isinstance(weights, list) and len(weights) == len(specs)
                                  and all(is_number(w) and w >= 0 for w in weights) and sum(weights) > 0):
        raise ConfigError(f"{path}: blend.weights must be auto or a list of {len(specs)} numbers >= 0, not all 0, "
                          f"one per member ({', '.join(s.name for s in specs)}), got {weights!r}")
    if not is_int(blend["seed"]):
        raise ConfigError(f"{path}: blend.seed must be an integer, got {blend['seed']!r}")
    if blend["depth"] is not None and not (is_int(blend["depth"]) and blend["depth"] >= K):
        raise ConfigError(f"{path}: blend.depth must be an integer >= {K} or ~, got {blend['depth']!r}")
    settings = values.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{path}: settings must map settings to values, got {settings!r}")
    return Recipe(path, specs, blend["method"], weights, blend["seed"], blend["depth"], settings, quick)


def _check_section(values, known, where):
    if not isinstance(values, dict):
        raise ConfigError(f"{where.rstrip(': .')}: expected `key: value` lines, got {values!r}")
    for key in values:
        if key not in known:
            raise ConfigError(f"{where}{key}: unknown key; known: {', '.join(known)}{did_you_mean(key, known)}")


def _with_changes(values, changes, where):
    """The recipe with its quick: block applied: sections merged key by key, members entry by entry."""
    for key, change in changes.items():
        if not isinstance(change, dict):
            raise ConfigError(f"{where}{key}: expected `key: value` entries to change (for members: a member "
                              f"name with its changes, ~ to leave it out), got {change!r}")
    merged = {**values, **{key: {**(values.get(key) or {}), **change} for key, change in changes.items()}}
    members = dict(values.get("members") or {})
    for name, change in (changes.get("members") or {}).items():
        if change is None:
            members.pop(name, None)
        elif isinstance(change, dict) and isinstance(members.get(name), dict):
            _check_section(change, MEMBER_KEYS, f"{where}members.{name}.")
            members[name] = {**members[name], **change}
        else:
            members[name] = change
    merged["members"] = members
    return merged


def _member(name, entry, path):
    where = f"{path}: members.{name}"
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{where}: a member name must be letters, digits, _ . - (a folder name)")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected {{config: FILE}} or {{model: NAME}} with optional set: and seeds:, "
                          f"got {entry!r}")
    _check_section(entry, MEMBER_KEYS, f"{where}.")
    if not entry.get("config") and not entry.get("model"):
        raise ConfigError(f"{where}: needs config: (a model yaml or a search's best.yaml) or model: NAME")
    if entry.get("config") and not Path(entry["config"]).is_file():
        raise ConfigError(f"{where}.config: {entry['config']}: config file not found")
    overrides = entry.get("set") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}.set: expected `setting: value` entries, got {overrides!r}")
    seeds = entry.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and seeds and all(is_int(s) and s >= 0 for s in seeds)
                                  and len(set(seeds)) == len(seeds)):
        raise ConfigError(f"{where}.seeds must be a list of distinct integers >= 0, e.g. [1, 2, 3, 4], got {seeds!r}")
    return MemberSpec(name, entry.get("config"), entry.get("model"), overrides, seeds)


def member_settings(recipe, spec, overrides=()):
    """A member's settings: its yaml (its quick: block when the recipe is quick and it has one), the recipe's
    settings, its set:, then the command line's key=value; an error names the layer it came from."""
    layers = [(f"{recipe.path}: settings", _pairs(recipe.settings)),
              (f"{recipe.path}: members.{spec.name}.set", _pairs(spec.set)),
              ("command line", list(overrides))]
    model_file = spec.config and str(spec.config)
    where = f"{recipe.path}: members.{spec.name}"
    base = _loaded(spec, model_file, [], False, where)
    quick = recipe.quick and bool(base.values.get("quick"))  # a member without a quick: block runs as it is
    settings, pairs = None, []
    for label, layer in layers:  # a layer's errors are named by the layer
        if layer:
            pairs += layer
            settings = _loaded(spec, model_file, pairs, quick, where, label)
    return settings or (_loaded(spec, model_file, [], quick, where) if quick else base)


def _loaded(spec, model_file, pairs, quick, where, label=None):
    try:
        return load_settings(spec.model, model_file, pairs, quick=quick)
    except ConfigError as error:
        text = str(error)
        if label and text.startswith("command line:"):
            text = label + text[len("command line"):]
        elif not text.startswith("command line:"):
            text = f"{where}: {text}"
        raise ConfigError(text) from None


def _pairs(values):
    """Settings as key=value overrides (JSON is yaml: values keep their type)."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


# ----------------------------------------------------------------------------
# The plan: which runs, which are finished


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

    @property
    def label(self):
        return self.member if self.seed is None else f"{self.member} (seed {self.seed})"


def run_key(settings, fingerprint):
    """The hash of what a run computes: its settings, but where and how it runs, and the prepared data."""
    values = {key: value for key, value in settings.values.items() if key not in NOT_IN_KEY}
    text = json.dumps([fingerprint, values], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def is_finished(folder):
    """A run folder with its validation lists, final lists and summary, without an error."""
    summary = Path(folder) / run_folder.SUMMARY
    if not all((Path(folder) / name).is_file() for name in (run_folder.SUMMARY, run_folder.VALID_TOP, run_folder.FULL_TOP)):
        return False
    try:
        return not json.loads(summary.read_text()).get("error")
    except ValueError:
        return False


def plan(recipe, runs_dir, overrides=()):
    """Every run of the recipe with its settings, key and folder, and the prepared data (checked: one for all)."""
    runs, prepared = [], {}
    resolved = []  # every member's settings are checked before any data is prepared
    for spec in recipe.members:
        settings = member_settings(recipe, spec, overrides)
        where = f"{recipe.path}: members.{spec.name}: tune.resources_per_trial"
        resources = parse_resources((settings.values.get("tune") or {}).get(
            "resources_per_trial", TUNE_DEFAULTS["resources_per_trial"]), where)
        resolved.append((spec, settings, resources))
    for spec, settings, resources in resolved:
        data = prepared[spec.name] = pipeline.prepare_data(settings)
        for seed in spec.seeds or [None]:
            run_settings = settings if seed is None else settings.with_values(seed=seed)
            run_settings.values["show_progress"] = False  # progress bars of runs side by side garble the console
            key = run_key(run_settings, data.fingerprint)
            name = spec.name if seed is None else f"{spec.name}-seed{seed}"
            runs.append(Run(spec.name, seed, run_settings, key, Path(runs_dir) / f"{name}-{key}", resources))
    fingerprints = {}
    for name, data in prepared.items():
        fingerprints.setdefault(data.fingerprint, []).append(name)
    if len(fingerprints) > 1:
        detail = "; ".join(f"{fp} ({', '.join(names)})" for fp, names in fingerprints.items())
        raise ConfigError(f"{recipe.path}: the members would train on different prepared data (data, dataset or "
                          f"holdout settings differ): {detail}; set them once under settings:")
    for run in runs:
        run.settings = run.settings.with_values(output_dir=str(run.folder))
        if is_finished(run.folder):
            run.status = "reused"
    return runs, next(iter(prepared.values()))


# ----------------------------------------------------------------------------
# Training: one Ray task per run


def _train(settings):
    """A Ray task: one run of the pipeline, with as many torch threads as the task's CPUs."""
    use_assigned_cpus()
    started = time.time()
    pipeline.run(settings)
    return started, time.time()


_train_task = ray.remote(max_retries=0)(_train)


def train(runs, address=None, max_parallel=None):
    """Train the runs that are not finished as Ray tasks, at most max_parallel at a time (None: as the
    resources allow); a failed run is recorded with its error, the others go on."""
    todo = [run for run in runs if run.status != "reused"]
    if not todo:
        return
    started_ray = tuning.start_ray(address)
    try:
        for run in todo:
            run.resources = trial_resources(run.resources, run.settings["device"])
            shutil.rmtree(run.folder, ignore_errors=True)  # a folder that is not a finished run: train again
        waiting, running = list(todo), {}
        while waiting or running:
            while waiting and len(running) < (max_parallel or len(todo)):
                run = waiting.pop(0)
                logger.info("training %s with %s: %s", run.label, run.resources, run.folder)
                options = {"num_cpus": run.resources["cpu"], "num_gpus": run.resources["gpu"]}
                running[_train_task.options(**options).remote(run.settings)] = run
            done, _ = ray.wait(list(running), num_returns=1)
            run = running.pop(done[0])
            try:
                run.started, run.finished = ray.get(done[0])
                run.status = "trained"
            except ray.exceptions.RayError as error:  # the run's exception, or its worker died
                cause = getattr(error, "cause", None)
                run.status, run.error = "failed", run_folder.error_line(cause if isinstance(cause, BaseException)
                                                                      else error)
                failed = run.folder.with_name(run.folder.name + run_folder.FAILED)
                run.log = str(failed) if failed.exists() else None
                logger.warning("%s failed: %s%s", run.label, run.error, f" (its log: {run.log})" if run.log else "")
    finally:
        if started_ray:
            ray.shutdown()


# ----------------------------------------------------------------------------
# Members: a run, or the average of a member's seed runs


def member_folders(recipe, runs, runs_dir):
    """{member name: its run folder} for the members with a finished run; a member with several finished
    seed runs gets a folder of their averaged lists."""
    folders = {}
    for spec in recipe.members:
        finished = [run for run in runs if run.member == spec.name and run.status != "failed"]
        if not finished:
            continue
        if spec.seeds is None:
            folders[spec.name] = finished[0].folder
        else:
            key = hashlib.sha256(" ".join(run.key for run in finished).encode()).hexdigest()[:12]
            folders[spec.name] = average_seeds(finished, Path(runs_dir) / f"{spec.name}-seeds-{key}")
    return folders


def average_seeds(runs, folder):
    """A run folder whose lists average those of the seed runs (the ensemble's score fusion, equal weights:
    the mean of per-user min-max scaled scores); made once, then reused."""
    if is_finished(folder):
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    members = ensemble.load_members([run.folder for run in runs])
    first = members[0].summary
    top_n = runs[0].settings["top_n"]
    weights = [1 / len(members)] * len(members)
    valid = fusion.score_fusion([m.valid for m in members], weights, k=top_n)
    full = fusion.score_fusion([m.full for m in members], weights, k=top_n)
    hidden = pd.read_csv(first["data"]["holdout_path"])
    users = run_folder.holdout_activity(Prepared.load(first["data"]["data_path"]), hidden).join(part_scores(valid, hidden))
    summary = {
        **{key: first[key] for key in ("model", "data", "config")},
        "holdout": mean_scores(users),
        "holdout_detail": holdout_detail(users),
        "seeds": [{"seed": run.seed, "path": str(run.folder), "holdout": m.summary["holdout"]}
                  for run, m in zip(runs, members)],
        "averaged": "the mean of each seed run's per-user min-max scaled scores (ensemble score fusion)",
        "timings": {},
    }
    with run_folder.staged(folder) as staging:
        valid[["user", "item", "score"]].to_csv(staging / run_folder.VALID_TOP, index=False)
        run_folder.write_full_lists(staging, full, ensemble.full_inter_path(first["data"]["data_path"]))
        run_folder.write_holdout_users(staging, users)
        (staging / run_folder.SUMMARY).write_text(json_text(summary))
    return folder


# ----------------------------------------------------------------------------
# The blend


def default_output(recipe):
    return Path("outputs").resolve() / f"blend-{recipe.path.stem}{'-quick' if recipe.quick else ''}"


def check_output(output):
    """The output folder may be new, or an earlier blend (replaced); anything else is refused."""
    if not output.exists():
        return
    summary = output / run_folder.SUMMARY
    try:
        is_blend = output.is_dir() and "blend" in json.loads(summary.read_text())
    except (OSError, ValueError):
        is_blend = False
    if not is_blend:
        raise ConfigError(f"output folder {output} exists and is not a blend's; choose another --output")


def write_blend(recipe, runs, folders, output, seconds=None):
    """The ensemble of the member folders, as the output folder (staged, then moved into place)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(output.parent)
    staging = staging_path(output)
    shutil.rmtree(staging, ignore_errors=True)
    (staging / MEMBERS_DIR).mkdir(parents=True)
    try:
        links = []
        for name, folder in folders.items():
            (staging / MEMBERS_DIR / name).symlink_to(Path(folder).resolve(), target_is_directory=True)
            links.append(staging / MEMBERS_DIR / name)
        weights = recipe.weights
        if weights != "auto":  # the weights of the members that finished, in their order
            kept = [w for spec, w in zip(recipe.members, weights) if spec.name in folders]
            if not sum(kept):
                raise BlendError(f"the members that finished ({', '.join(folders)}) all have weight 0")
            weights = ",".join(str(w) for w in kept)
        inner = staging / "ensemble"
        summary = ensemble.build(links, recipe.method, weights, recipe.seed, inner, recipe.depth)
        for path in inner.iterdir():
            path.rename(staging / path.name)
        inner.rmdir()
        summary["output_dir"] = str(output)
        summary["blend"] = {**blend_record(recipe, runs, folders),
                            "seconds": {step: round(value, 2) for step, value in (seconds or {}).items()}}
        (staging / run_folder.SUMMARY).write_text(json_text(summary))
        (staging / REPORT).write_text(report(summary))
        if output.exists():  # an earlier blend: out of the way, then gone
            old = staging_path(output.with_name(output.name + ".old"))
            output.rename(old)
            staging.rename(output)
            shutil.rmtree(old)
        else:
            staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def blend_record(recipe, runs, folders):
    """What summary.json keeps of the recipe and of each run: reused, trained or failed, where, how long."""
    def record(run):
        return {"seed": run.seed, "status": run.status, "key": run.key, "path": str(run.folder),
                "resources": run.resources, "started": run.started, "finished": run.finished,
                "seconds": round(run.finished - run.started, 2) if run.finished else None,
                "error": run.error, "log": run.log}

    return {
        "recipe": str(recipe.path.resolve()), "quick": recipe.quick,
        "members": [{"name": spec.name, "model": spec.model or None, "config": spec.config,
                     "path": str(folders[spec.name]) if spec.name in folders else None,
                     "runs": [record(run) for run in runs if run.member == spec.name]}
                    for spec in recipe.members],
        "left_out": [spec.name for spec in recipe.members if spec.name not in folders],
        "trained": sum(run.status == "trained" for run in runs),
        "reused": sum(run.status == "reused" for run in runs),
        "failed": sum(run.status == "failed" for run in runs),
    }


def report(summary):
    """The ensemble's table, then each run's status."""
    text = io.StringIO()
    ensemble.print_table(summary, text)
    for member in summary["blend"]["members"]:
        for run in member["runs"]:
            name = member["name"] + (f" seed {run['seed']}" if run["seed"] is not None else "")
            detail = {"trained": f"trained in {run['seconds']} s", "reused": "reused",
                      "failed": f"FAILED: {run['error']}, left out"}[run["status"]]
            print(f"  {name}: {detail} ({run['log'] or run['path']})", file=text)
    return text.getvalue()


def blend(recipe_path, data=None, output=None, runs_dir=None, quick=False, address=None, device=None,
          max_parallel=None, overrides=()):
    """Check the recipe, train what is missing, blend; returns the blend's summary."""
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError(f"--max-parallel must be >= 1, got {max_parallel}")
    recipe = read_recipe(recipe_path, quick)
    flags = {"data": data, "device": device}
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None] + list(overrides)
    output = Path(output).resolve() if output else default_output(recipe)
    check_output(output)
    runs_dir = Path(runs_dir).resolve() if runs_dir else output.parent / "blend-runs"
    started = time.perf_counter()
    runs, _ = plan(recipe, runs_dir, overrides)
    if not address:  # a local Ray has this machine's devices: refuse a missing GPU before Ray starts
        for run in runs:
            resolve_device(run.settings["device"])
    logger.info("%d runs: %d to train, %d reused", len(runs), sum(r.status != "reused" for r in runs),
                sum(r.status == "reused" for r in runs))
    planned = time.perf_counter()
    train(runs, address, max_parallel)
    trained = time.perf_counter()
    folders = member_folders(recipe, runs, runs_dir)
    left_out = [spec.name for spec in recipe.members if spec.name not in folders]
    for name in left_out:
        logger.warning("member %s left out of the blend: none of its runs finished", name)
    if len(folders) < 2:
        errors = "; ".join(f"{run.label}: {run.error}" for run in runs if run.status == "failed")
        raise BlendError(f"only {len(folders)} of {len(recipe.members)} members finished, an ensemble needs two; "
                         f"nothing blended ({errors})")
    seconds = {"plan": planned - started, "train": trained - planned}
    return write_blend(recipe, runs, folders, output, seconds)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_ext.blend", description=__doc__.split("\n")[0],
                                     usage=__doc__.split("\n\n")[1])
    parser.add_argument("recipe", help="a blend recipe, e.g. yaml/blends/leaderboard.yaml")
    parser.add_argument("--data", help="raw competition folder (default: the embedded MovieLens-100K)")
    parser.add_argument("--output", help="the blend's folder (default: outputs/blend-<recipe>[-quick])")
    parser.add_argument("--runs", help="where member runs are kept and reused (default: blend-runs beside --output)")
    parser.add_argument("--quick", action="store_true", help="members' quick: blocks and the recipe's quick: block")
    parser.add_argument("--address", help="attach to a running Ray cluster: auto or HOST:PORT")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-parallel", type=int, help="train at most N runs at a time (default: as resources allow)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="settings for every member")
    args = parser.parse_intermixed_args(argv)
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    for name in ("movierec.blend", "movierec.tune"):  # the driver's messages
        logging.getLogger(name).addHandler(console)
        logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger(name).propagate = False
    try:
        summary = blend(args.recipe, args.data, args.output, args.runs, args.quick, args.address, args.device,
                        args.max_parallel, args.overrides)
    except (ConfigError, RawDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (BlendError, fusion.EnsembleError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept and reused by the same command", file=sys.stderr)
        return 130
    finally:
        for name in ("movierec.blend", "movierec.tune"):
            logging.getLogger(name).removeHandler(console)
    print(report(summary), end="")
    return 0


if __name__ == "__main__":  # the importable module's main: Ray's workers find _train by its module
    from recbole_ext.blend import main as blend_main

    sys.exit(blend_main())
