"""A blend recipe read and checked before anything runs, and each member's layered settings."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from recbole_ext import ConfigError
from recbole_ext.blend import ensemble, stack, stack_features
from recbole_ext.config.keys import did_you_mean, is_int, is_number, read_yaml
from recbole_ext.config.settings import load_settings
from recbole_ext.evaluator import calibration
from recbole_ext.evaluator.metrics import RECALL, K, Objective

RECIPE_KEYS = ("members", "blend", "settings", "quick")
MEMBER_KEYS = ("config", "model", "set", "seeds")
BLEND_DEFAULTS = {"method": "score", "weights": "auto", "seed": 0, "depth": None, "stack": None, "objective": RECALL}
STACK_KEYS = ("candidates", "folds", "features", "bags")  # stack.Options
NAME = re.compile(r"[A-Za-z0-9][\w.-]*")


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
    stack: stack.Options  # the second stage's (method stack or auto)
    objective: Objective  # what the weights, the stage and auto's choice maximise (a share read or given)
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
    weights, depth = blend["weights"], blend["depth"]
    for key, ok, rule in (
        ("method", blend["method"] in ensemble.BLEND_METHODS, f"one of {', '.join(ensemble.BLEND_METHODS)}"),
        (
            "weights",
            weights == "auto"
            or (
                isinstance(weights, list)
                and len(weights) == len(specs)
                and all(is_number(w) and w >= 0 for w in weights)
                and sum(weights) > 0
            ),
            f"auto or a list of {len(specs)} numbers >= 0, not all 0, one per member "
            f"({', '.join(s.name for s in specs)})",
        ),
        ("seed", is_int(blend["seed"]), "an integer"),
        ("depth", depth is None or (is_int(depth) and depth >= K), f"an integer >= {K} or ~"),
    ):
        if not ok:
            raise ConfigError(f"{path}: blend.{key} must be {rule}, got {blend[key]!r}")
    if blend["method"] in (ensemble.STACK, ensemble.AUTO) and weights != "auto":
        raise ConfigError(f"{path}: blend.weights must be auto with method {blend['method']} (it fits its own blend)")
    options = _stack_options(blend["stack"], path)
    objective = calibration.resolved_objective(blend["objective"], f"{path}: blend.objective")
    settings = values.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{path}: settings must map settings to values, got {settings!r}")
    return Recipe(path, specs, blend["method"], weights, blend["seed"], depth, options, objective, settings, quick)


def _stack_options(values, path):
    """blend.stack: {candidates, folds, features, bags}, checked; the defaults where absent."""
    where = f"{path}: blend.stack"
    values = values or {}
    _check_section(values, STACK_KEYS, f"{where}.")
    features = values.get("features")
    if features is not None and not (isinstance(features, list) and features):
        raise ConfigError(
            f"{where}.features must be a list of feature groups ({', '.join(stack_features.FEATURES)}), got {features!r}"
        )
    defaults = stack.Options()
    options = stack.Options(
        values.get("candidates", defaults.candidates),
        values.get("folds", defaults.folds),
        tuple(features) if features else None,
        values.get("bags", defaults.bags),
    )
    try:
        options.check(where)
    except stack.EnsembleError as error:
        raise ConfigError(str(error)) from None
    return options


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
            raise ConfigError(
                f"{where}{key}: expected `key: value` entries to change (for members: a member "
                f"name with its changes, ~ to leave it out), got {change!r}"
            )
        if not isinstance(values.get(key) or {}, dict):  # the section the change merges into
            raise ConfigError(
                f"{where.removesuffix('quick.')}{key}: expected `key: value` entries, got {values[key]!r}"
            )
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
        raise ConfigError(
            f"{where}: expected {{config: FILE}} or {{model: NAME}} with optional set: and seeds:, got {entry!r}"
        )
    _check_section(entry, MEMBER_KEYS, f"{where}.")
    if not entry.get("config") and not entry.get("model"):
        raise ConfigError(f"{where}: needs config: (a model yaml or a search's best.yaml) or model: NAME")
    if entry.get("config") and not Path(entry["config"]).is_file():
        raise ConfigError(f"{where}.config: {entry['config']}: config file not found")
    overrides = entry.get("set") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}.set: expected `setting: value` entries, got {overrides!r}")
    seeds = entry.get("seeds")
    if seeds is not None and not (
        isinstance(seeds, list) and seeds and all(is_int(s) and s >= 0 for s in seeds) and len(set(seeds)) == len(seeds)
    ):
        raise ConfigError(f"{where}.seeds must be a list of distinct integers >= 0, e.g. [1, 2, 3, 4], got {seeds!r}")
    return MemberSpec(name, entry.get("config"), entry.get("model"), overrides, seeds)


def member_settings(recipe, spec, overrides=()):
    """A member's settings: its yaml (its quick: block when the recipe is quick and it has one), the recipe's
    settings, its set:, then the command line's key=value; an error names the layer it came from."""
    where = f"{recipe.path}: members.{spec.name}"
    own = _loaded(spec, [], (), False, where)
    quick = recipe.quick and bool(own.values.get("quick"))  # a member without a quick: block runs as it is
    layers = [(f"{recipe.path}: settings", _pairs(recipe.settings)), (f"{where}.set", _pairs(spec.set))]
    return _loaded(spec, layers, overrides, quick, where)


def _pairs(values):
    """Settings as key=value overrides (JSON is yaml: values keep their type)."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def _loaded(spec, layers, overrides, quick, where):
    """load_settings, its error named by the layer that set the value (each message names its source) or,
    for the member's yaml, by the member."""
    try:
        return load_settings(
            spec.model, spec.config and str(spec.config), overrides, quick=quick, named_overrides=layers
        )
    except ConfigError as error:
        text = str(error)
        named = text.startswith(tuple(f"{label}:" for label in ["command line", *dict(layers)]))
        raise ConfigError(text if named else f"{where}: {text}") from None
