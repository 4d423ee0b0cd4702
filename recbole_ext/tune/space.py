"""The ``tune:`` section of the settings -> a checked TuneSpec -> Ray Tune's search space.

The syntax is defined once, here (TUNE_DEFAULTS, DISTRIBUTIONS, SCHEDULERS,
SEARCHES), and documented in docs/tuning.md. Every value a trial can get is
checked like a run's settings before Ray starts (``sampled_settings``).
"""

import importlib.util
import math
from dataclasses import dataclass

from ray import tune

from recbole_ext import ConfigError
from recbole_ext.config.checks import check_settings
from recbole_ext.config.keys import MANAGED, MOVIEREC_KEYS, did_you_mean, is_int, is_number, known_keys
from recbole_ext.config.settings import Settings
from recbole_ext.evaluator.metrics import CALIBRATED, parse_objective

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
# the movierec settings a search may vary: the filter changes each trial's lists, never its data or holdout
SEARCHABLE = {"filter"}  # searched whole: filter: {grid: [{future_items: ~}, {future_items: 2}]}


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
        raise ConfigError(
            f"{where()}: expected a `tune:` section with a search_space for {settings.model}, got {section!r}"
        )
    for key in section:
        if key not in TUNE_DEFAULTS:
            raise ConfigError(f"{where()}: unknown entry {key!r}{did_you_mean(key, TUNE_DEFAULTS)}")
    values = {**TUNE_DEFAULTS, **section}

    try:
        values["metric"] = parse_objective(values["metric"]).name  # `calibrated` was resolved by load_settings
    except ValueError as error:
        raise ConfigError(f"{where('metric')} {error}") from None
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
        raise ConfigError(
            f"{where('search')}: {search} needs the {SEARCHES[search]} package, which is not "
            f"installed; use search: random, or install it"
        )
    scheduler, options = _parse_scheduler(values["scheduler"], settings, where("scheduler"))
    resources = parse_resources(values["resources_per_trial"], where("resources_per_trial"))
    space = _parse_space(values["search_space"], settings, search, where("search_space"))
    return TuneSpec(
        values["metric"], values["mode"], values["num_samples"], space, scheduler, options, search, resources, limit
    )


def _parse_space(space, settings, search, where):
    if not isinstance(space, dict) or not space:
        raise ConfigError(
            f"{where} must map settings to distributions, e.g. `learning_rate: {{loguniform: [1.0e-4, 1.0e-2]}}`"
        )
    valid = known_keys(settings.model)
    parsed = {}
    for key, entry in space.items():
        if "." in str(key):
            raise ConfigError(f"{where}: {key!r}: dotted keys cannot be searched, only top-level settings")
        if key not in valid:
            raise ConfigError(f"{where}: unknown setting {key!r} for {settings.model}{did_you_mean(key, valid)}")
        if key in MOVIEREC_KEYS - SEARCHABLE:
            raise ConfigError(
                f"{where}: {key!r} cannot be searched: every trial runs on the same data, "
                f"holdout and outputs (movierec settings)"
            )
        if key in MANAGED:
            raise ConfigError(f"{where}: {key!r} cannot be searched: it is managed by movierec: {MANAGED[key]}")
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(
                f"{where}.{key}: expected {{distribution: arguments}}, e.g. {{choice: [64, 128]}}, got {entry!r}"
            )
        ((name, args),) = entry.items()
        if name not in DISTRIBUTIONS:
            raise ConfigError(
                f"{where}.{key}: unknown distribution {name!r}{did_you_mean(name, DISTRIBUTIONS)}; "
                f"known: {', '.join(DISTRIBUTIONS)}"
            )
        problem = _distribution_problem(name, args)
        if problem:
            raise ConfigError(f"{where}.{key}: {name}: {problem}")
        if name == "grid" and search != "random":
            raise ConfigError(f"{where}.{key}: grid needs search: random ({search} samples; use choice)")
        if name == "choice" and search != "random" and not all(is_scalar(v) for v in args):
            raise ConfigError(
                f"{where}.{key}: {search} chooses among numbers, strings and booleans only; "
                f"use search: random for list values"
            )
        if key == "valid_metric" and name in LISTED and any(_calibrated(value) for value in args):
            raise ConfigError(
                f"{where}.{key}: `calibrated` is read from the leaderboard log once, before the search: set "
                f"valid_metric: recall@10 calibrated outside tune.search_space, or search given shares "
                f"(recall@10 last:0.4)"
            )
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


def _calibrated(value):
    try:
        return parse_objective(value).share == CALIBRATED
    except ValueError:
        return False  # refused by the value's own check


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
    name, options = next(iter(value.items())) if isinstance(value, dict) and len(value) == 1 else (value, {})
    if not isinstance(name, str) or name not in SCHEDULERS:
        raise ConfigError(
            f"{where}: expected one of {', '.join(SCHEDULERS)} or {{asha: {{option: value}}}}, "
            f"got {value!r}{did_you_mean(str(name), SCHEDULERS)}"
        )
    options = options or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where}.{name}: expected {{option: value}}, got {options!r}")
    for key in options:
        if key not in SCHEDULERS[name]:
            known = ", ".join(SCHEDULERS[name]) or "none"
            raise ConfigError(
                f"{where}.{name}: unknown option {key!r}{did_you_mean(key, SCHEDULERS[name])}; known: {known}"
            )
    options = {**SCHEDULERS[name], **options}
    if name == "asha":
        options["max_t"] = options["max_t"] or settings["epochs"]
        for key in ("grace_period", "max_t", "brackets"):
            if not is_int(options[key]) or options[key] < 1:
                raise ConfigError(f"{where}.asha.{key} must be an integer >= 1, got {options[key]!r}")
        if not is_number(options["reduction_factor"]) or options["reduction_factor"] <= 1:
            raise ConfigError(
                f"{where}.asha.reduction_factor must be a number > 1, got {options['reduction_factor']!r}"
            )
        if options["grace_period"] > options["max_t"]:
            raise ConfigError(
                f"{where}.asha: grace_period {options['grace_period']} exceeds max_t "
                f"{options['max_t']} (max_t defaults to epochs)"
            )
    return name, options


def parse_resources(value, where):
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


def is_scalar(value):
    return value is None or isinstance(value, (bool, int, float, str))


def param_space(spec):
    """Ray's search space for the searched settings (a listed distribution takes its list whole)."""
    return {
        key: DISTRIBUTIONS[name][1](args) if name in LISTED else DISTRIBUTIONS[name][1](*args)
        for key, (name, args) in spec.search_space.items()
    }


def sampled_settings(settings, sampled, output_dir):
    """The settings of one trial: the search's with the sampled values merged, checked like any run."""
    source = settings.sources.get("tune.search_space") or settings.sources.get("tune", "settings")
    values = {key: plain_value(value) for key, value in sampled.items()}
    trial = settings.with_values(**values, output_dir=output_dir)
    trial.sources.update({key: f"{source}: tune.search_space.{key}" for key in values})
    check_settings(trial)
    return trial


def plain_value(value):
    """A sampled value as a plain Python value (Ray may hand numpy scalars)."""
    return value.item() if hasattr(value, "item") else value
