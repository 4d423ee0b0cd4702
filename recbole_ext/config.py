"""Run settings: yaml layering and checks (recbole_config.py builds RecBole's Config from them).

Layers, later ones winning:

    yaml/base.yaml < yaml/<model>.yaml < --config FILE < its ``quick:`` block
    (with --quick) < key=value overrides (``holdout.seed=3`` reaches inside)

Every key must be a movierec setting (MOVIEREC_KEYS, defaults in
yaml/base.yaml) or a RecBole setting known for the model; anything else
stops with the file it came from and the closest valid name. RecBole never
sees sys.argv: everything reaches it through ``config_dict``.

Over 300 lines: every check names the layer its value came from (``sources``), which the layering records;
apart, the two halves would hand that record back and forth.
"""

import copy
import difflib
import importlib.util
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from recbole.utils.argument_list import dataset_arguments, evaluation_arguments, general_arguments, training_arguments

import yaml
from atomic_data import BASE_YAML, HoldoutRule
from recbole_ext import ConfigError, registry, tracking
from recbole_ext.calibration import check_parts, resolve_objectives
from recbole_ext.item_file import data_item_fields
from recbole_ext.metrics import OBJECTIVE_TEXT, parse_objective

YAML_DIR = BASE_YAML.parent
RECBOLE_PROPERTIES = registry.RECBOLE_PROPERTIES.parent

# movierec's own settings (documented in yaml/base.yaml); RecBole never sees them
MOVIEREC_KEYS = {
    "model",
    "data",
    "data_dir",
    "dataset",
    "holdout",
    "filter",
    "output_dir",
    "device",
    "top_n",
    "refit",
    "refit_epochs",
    "predict_batch_users",
    "quick",
    "tune",
    "pretrained_path",
    "min_epoch_steps",
    "tracking",
}
SECTIONS = {"holdout", "filter", "quick", "tune", "tracking"}  # set entry by entry by each layer
FILTERS = {"future_items"}  # the entries of filter: (recbole_ext/future.py)
# RecBole settings that movierec sets itself
MANAGED = {
    "data_path": "set `data` (raw folder) and `data_dir` instead",
    "checkpoint_dir": "a run saves its model in its output folder",
    **dict.fromkeys(("metrics", "topk"), "runs are scored by the competition's recall@10 and ndcg@10 on the holdout"),
    **dict.fromkeys(("eval_args", "benchmark_filename"), "validation uses movierec's holdout (see `holdout`)"),
    **dict.fromkeys(("gpu_id", "use_gpu"), "set `device: cpu|cuda|auto`"),
    **dict.fromkeys(
        ("save_dataset", "dataset_save_path", "save_dataloaders", "dataloaders_save_path"),
        "movierec caches datasets itself",
    ),
    **dict.fromkeys(
        ("nproc", "world_size", "local_rank", "offset", "ip", "port"),  # read by RecBole, some unlisted
        "a run is one process on one device (RecBole's distributed training is not supported)",
    ),
    **dict.fromkeys(
        ("user_inter_num_interval", "item_inter_num_interval", "val_interval", "filter_inter_by_user_or_item"),
        "RecBole's filters would drop users or items that the holdout and the submission need; "
        "filter the raw files instead",
    ),
    **dict.fromkeys(
        ("log_wandb", "wandb_project"), "set `tracking: {backend: wandb, project: NAME}` (docs/tracking.md)"
    ),
    "rm_dup_inter": "preparing the data drops duplicate interactions already (keeping the earliest)",
}


def read_yaml(path):
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = yaml.load(path.read_text(), Loader=registry.YamlLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid yaml: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected `key: value` lines, got {type(values).__name__}")
    return values


def parse_overrides(pairs):
    """key=value strings -> a layer {key path: value}; values parsed as yaml scalars/flow; a dotted key
    (holdout.seed=3) is a path into a section."""
    layer = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"command line: {pair!r} is not key=value")
        try:
            value = yaml.load(text, Loader=registry.YamlLoader)
        except yaml.YAMLError:
            value = text
        layer[tuple(key.split("."))] = value
    return layer


def apply_layer(values, sources, layer, source):
    """Apply one layer to values (in place), later layers winning, by one rule: each key path sets one
    entry and keeps its siblings. A key is a path of itself, but a section's keys (SECTIONS) are paths of
    its entries, and a dotted key (holdout.seed=3) is its path. sources: where each key and each section
    entry came from, for messages."""
    for key, value in layer.items():
        path = key if isinstance(key, tuple) else (key,)
        sources[path[0]] = source
        if path[0] in SECTIONS and len(path) == 1 and isinstance(value, dict):
            if not isinstance(values.get(path[0]), dict):
                values[path[0]] = {}
            apply_layer(values, sources, {(*path, entry): entry_value for entry, entry_value in value.items()}, source)
            continue
        *parents, last = path
        target = values
        for parent in parents:
            if not isinstance(target.get(parent), dict):
                target[parent] = {}
            target = target[parent]
        target[last] = copy.deepcopy(value)
        if parents and parents[0] in SECTIONS:
            sources[f"{parents[0]}.{(parents[1:] or [last])[0]}"] = source


@dataclass
class Settings:
    """The resolved settings of one run."""

    model: str
    values: dict
    sources: dict = field(default_factory=dict)  # top-level key -> file it came from

    def __getitem__(self, key):
        return self.values[key]

    @property
    def holdout(self):
        return HoldoutRule.from_dict(self.values["holdout"])

    def recbole_values(self):
        """The RecBole part of the settings (config_dict)."""
        return {k: copy.deepcopy(v) for k, v in self.values.items() if k not in MOVIEREC_KEYS}

    def with_values(self, **changes):
        values = copy.deepcopy(self.values)
        values.update(changes)
        # a section replaced whole: its entries' sources (holdout.seed...) no longer apply
        sources = {
            key: source for key, source in self.sources.items() if key.split(".")[0] not in changes or "." not in key
        }
        return Settings(self.model, values, sources)


def load_settings(model=None, config_file=None, overrides=(), quick=False, named_overrides=()):
    """Resolve and check the layered settings of a run. named_overrides: (source, key=value list) pairs applied before
    the command line's overrides, each named by its source in messages (a blend recipe's settings)."""
    file_layer = read_yaml(config_file) if config_file else {}
    override_layer = parse_overrides(overrides)
    preset = model_preset(model)  # --model=gSASRec: yaml/gsasrec.yaml, as if given with --config
    preset_layer = read_yaml(preset) if preset else {}
    named = {
        "--model": None if preset else model,
        "command line": override_layer.pop(("model",), None),
        str(preset): preset_layer.get("model"),
        str(config_file): file_layer.get("model"),
    }
    named = {source: check_model(name) for source, name in named.items() if name}
    if not named:
        raise ConfigError("no model: pass --model NAME or set `model:` in the --config file")
    if len(set(named.values())) > 1:
        raise ConfigError(f"conflicting models: {', '.join(f'{n} ({s})' for s, n in named.items())}")
    model = next(iter(named.values()))

    layers = [(str(BASE_YAML), read_yaml(BASE_YAML))]
    model_yaml = YAML_DIR / f"{model.lower()}.yaml"
    if model_yaml.is_file():
        layers.append((str(model_yaml), read_yaml(model_yaml)))
    if preset:
        layers.append((str(preset), preset_layer))
    if config_file:
        layers.append((str(config_file), file_layer))
    values, sources = {}, {}
    for source, layer in layers:
        apply_layer(values, sources, layer, source)
    if quick:
        if not values.get("quick"):
            raise ConfigError(f"--quick: no `quick:` block for {model} in {', '.join(s for s, _ in layers)}")
        apply_layer(values, sources, values["quick"], f"{sources['quick']} (quick:)")
    for source, pairs in named_overrides:
        apply_layer(values, sources, parse_overrides(pairs), source)
    apply_layer(values, sources, override_layer, "command line")
    if check_model(values.get("model", model)) != model:
        raise ConfigError(f"{sources['model']}: model {values['model']!r} conflicts with {model!r}")
    values["model"] = model
    settings = Settings(model, values, sources)
    check_settings(settings)
    for key in ("data", "data_dir", "output_dir", "pretrained_path"):
        if values.get(key) is not None:
            values[key] = str(Path(values[key]).expanduser().resolve())
    values["tracking"] = tracking.resolved(values["tracking"])
    resolve_objectives(settings.values, settings.sources)
    return settings


def model_preset(name):
    """The yaml of a name that is not a model but has a yaml of its own naming one (gSASRec: yaml/gsasrec.yaml,
    model: SASRec), or None."""
    path = YAML_DIR / f"{str(name).lower()}.yaml"
    if not name or str(name).lower() in {n.lower() for n in registry.model_names()} or not path.is_file():
        return None
    return path if read_yaml(path).get("model") else None


def did_you_mean(name, valid, cutoff=0.6):
    """'; did you mean X?' for the closest valid name, or ''."""
    close = difflib.get_close_matches(str(name), sorted(valid), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_model(name):
    """The model's registered name (case does not matter); ConfigError when unknown or unable to run here."""
    names = registry.model_names()
    model = {n.lower(): n for n in names}.get(str(name).lower())
    if model is None:
        hint = did_you_mean(name, names, cutoff=0.5) or f"; known models: {', '.join(names)}"
        raise ConfigError(f"unknown model {name!r}{hint}")
    # the other model types (general, traditional, sequential, context-aware) run on the competition data
    if registry.is_decision_tree(model):  # its module imports xgboost and lightgbm: known by name
        raise ConfigError(f"model {model!r} cannot run here: decision-tree models need xgboost/lightgbm and label data")
    if registry.reads_knowledge_graph(model):  # also GRU4RecKG, KSR, sequential models
        raise ConfigError(
            f"model {model!r} cannot run here: it needs a knowledge graph (.kg, .link files), "
            "which the competition data lacks"
        )
    missing = registry.missing_package(model)
    if missing:
        module, pip_name = missing
        raise ConfigError(
            f"model {model!r} needs the package {module!r}, which is not installed: pip install {pip_name}"
        )
    return model


def setting_defaults(model):
    """RecBole's default of every setting of the model (read with RecBole's float rule: 1e-3 is a float); a
    pretraining model carries its downstream models' settings."""
    defaults = {}
    for path in (RECBOLE_PROPERTIES / "overall.yaml", RECBOLE_PROPERTIES / "dataset" / "sample.yaml"):
        defaults.update(read_yaml(path))
    for name in (*getattr(registry.get_model(model), "DOWNSTREAM_MODELS", ()), model):
        defaults.update(registry.model_properties(name))
    return defaults


def known_keys(model):
    """Every setting RecBole reads for this model, plus movierec's."""
    keys = set(MOVIEREC_KEYS) | set(MANAGED) | set(setting_defaults(model))
    return keys | set(general_arguments + training_arguments + evaluation_arguments + dataset_arguments)


def check_settings(settings):
    values, sources = settings.values, settings.sources
    keys = known_keys(settings.model)

    def where(key):
        return sources.get(key, "settings")

    def unknown(key, source):
        return ConfigError(f"{source}: unknown setting {key!r} for {settings.model}{did_you_mean(key, keys)}")

    for key in values:
        if key not in keys:
            raise unknown(key, where(key))
        if key in MANAGED:
            raise ConfigError(f"{where(key)}: {key!r} is managed by movierec: {MANAGED[key]}")
    for key in values.get("quick") or {}:  # a quick: block may hold a smaller tune: search too
        if key not in keys or key in ("quick", "model"):
            raise unknown(key, f"{where('quick')} (quick:)")

    try:
        HoldoutRule.from_dict(values["holdout"], where=f"{where('holdout')}: holdout")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    checks = {
        "device": (lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
        "valid_metric": (_is_objective, OBJECTIVE_TEXT),
        "top_n": (lambda v: is_int(v) and v >= 10, "an integer >= 10"),
        "refit": (lambda v: isinstance(v, bool), "true or false"),
        "refit_epochs": (lambda v: v == "best" or (is_int(v) and v >= 1), "best or an integer >= 1"),
        "predict_batch_users": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        "min_epoch_steps": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        "dataset": (lambda v: isinstance(v, str) and re.fullmatch(r"[\w.-]+", v), "a name of letters, digits, _ . -"),
    }
    for key, (ok, expected) in checks.items():
        if not ok(values[key]):
            raise ConfigError(f"{where(key)}: {key} must be {expected}, got {values[key]!r}")
    check_parts(parse_objective(values["valid_metric"]), values["holdout"], f"{where('valid_metric')}: valid_metric")
    if values.get("data") is not None and not Path(values["data"]).expanduser().is_dir():
        raise ConfigError(f"{where('data')}: data folder {values['data']!r} does not exist")
    for key in ("data_dir", "output_dir"):  # folders made later: nothing in their way may be a file
        path = Path(values[key] or ".").expanduser().absolute()
        blocking = next(p for p in (path, *path.parents) if p.exists())
        if not blocking.is_dir():
            raise ConfigError(f"{where(key)}: {key} {values[key]!r}: {blocking} is a file, expected a folder")
    if values.get("pretrained_path") is not None and not Path(values["pretrained_path"]).is_file():
        raise ConfigError(f"{where('pretrained_path')}: pretrained checkpoint {values['pretrained_path']!r} not found")
    _check_tracking(values["tracking"], where)
    _check_filter(values, sources)  # after data: the films' years come from its side files
    check_values(settings.model, settings.recbole_values(), where)
    _check_selected_features(settings.model, values, where)
    for key, only in registry.ONLY_VALUES.get(settings.model, {}).items():
        if values.get(key, only) != only:
            raise ConfigError(f"{where(key)}: {key}: {settings.model} supports only {only!r}, got {values[key]!r}")
    model_check = registry.settings_check(settings.model)
    if model_check:
        model_check(values, where)


# The kind of number a setting takes: its type from RecBole's default for the model (an integer,
# a number, true/false, a list of numbers), its range from its name (a name rule whose range
# excludes the model's own default does not apply to that model).
COUNT_NAME = re.compile(
    r"^(n|num)_|(^|_)(k|epochs?|size|num|steps?|layers?|heads|dim|dimension|hops|len|length|samples)$", re.I
)
INTEGER_SETTINGS = {"seed"}  # integers that count nothing
RANGES = [  # (name pattern, integers only?, test, text)
    (COUNT_NAME, True, lambda v: v >= 1, ">= 1"),
    (re.compile(r"dropout|_probs?$|_ratio$"), False, lambda v: 0 <= v <= 1, "in [0, 1]"),
    (re.compile(r"learning_rate$"), False, lambda v: v > 0, "> 0"),
    (re.compile(r"weights?$|weight_decay$"), False, lambda v: v >= 0, ">= 0"),
]


def check_values(model, values, where):
    """Each value of the kind RecBole's default for the model says (true or false, a number, a list of numbers;
    other defaults say nothing); where(key) names its source."""
    defaults = setting_defaults(model)
    for key, value in values.items():
        default = defaults.get(key)
        if isinstance(default, bool):
            ok, expected = isinstance(value, bool), "true or false"
        elif is_number(default):
            number_ok, expected = _number_rule(key, default)
            ok = number_ok(value)
        elif isinstance(default, list) and default and all(map(is_number, default)):
            number_ok, expected = _number_rule(key, default[0])
            ok = isinstance(value, list) and all(map(number_ok, value))
            expected = "a list of " + expected.replace("an integer", "integers").replace("a number", "numbers")
        else:
            continue
        if not ok:
            raise ConfigError(f"{where(key)}: {key} must be {expected}, got {value!r}")


def _number_rule(key, default):
    integer = isinstance(default, int) and (COUNT_NAME.search(key) or key in INTEGER_SETTINGS)
    kind, is_kind = ("an integer", is_int) if integer else ("a number", is_finite)
    for pattern, integers_only, in_range, text in RANGES:
        if pattern.search(key) and (integer or not integers_only) and in_range(default):
            return (lambda v: is_kind(v) and in_range(v)), f"{kind} {text}"  # noqa: B023 (returned at once)
    return is_kind, kind


def _is_objective(value):
    try:
        return bool(parse_objective(value))
    except ValueError:
        return False


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite(value):
    """A number, neither infinite nor NaN (yaml's .inf, .nan)."""
    return is_number(value) and math.isfinite(value)


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_tracking(values, where):
    """The tracking: section's entries; a backend whose package is missing is refused with its install command."""
    if not isinstance(values, dict):
        raise ConfigError(
            f"{where('tracking')}: tracking must be `key: value` entries ({', '.join(tracking.KEYS)}), got {values!r}"
        )
    for key in values:
        if key not in tracking.KEYS:
            raise ConfigError(
                f"{where(f'tracking.{key}')}: unknown setting 'tracking.{key}'; known: "
                f"{', '.join(tracking.KEYS)}{did_you_mean(key, tracking.KEYS)}"
            )
    name = r"[\w.-]+"
    rules = {
        "backend": (lambda v: v in tracking.BACKENDS, "none, mlflow or wandb"),
        "project": (lambda v: isinstance(v, str) and re.fullmatch(name, v), "a name of letters, digits, _ . -"),
        "group": (lambda v: v is None or (isinstance(v, str) and re.fullmatch(name, v)), "~ or a name"),
        "uri": (lambda v: v is None or (isinstance(v, str) and v), "~ or an MLflow tracking URI"),
        "dir": (lambda v: v is None or (isinstance(v, str) and v), "~ or a folder"),
    }
    for key, (ok, expected) in rules.items():
        if not ok(values.get(key)):
            raise ConfigError(f"{where(f'tracking.{key}')}: tracking.{key} must be {expected}, got {values.get(key)!r}")
    package = tracking.BACKENDS[values["backend"]]
    if package and importlib.util.find_spec(package[0]) is None:
        raise ConfigError(
            f"{where('tracking.backend')}: tracking.backend {values['backend']} needs the package {package[0]!r}, "
            f"which is not installed: pip install {package[1]}"
        )


def _check_selected_features(model, values, where):
    """FDSA, GRU4RecF, SASRecF (selected_features) and RecBole's S3Rec (item_attribute) read the item fields
    they name: each must be loaded. RecBole's default is MovieLens-100K's raw field `class`, which prepared
    data does not have. movierec's S3Rec (a pretraining model) loads its item_attribute fields itself, in any
    form: {field: weight}, [field, ...] or field."""
    pretraining = bool(getattr(registry.get_model(model), "DOWNSTREAM_MODELS", ()))
    for key in ("selected_features", "item_attribute"):
        fields = values.get(key, registry.model_properties(model).get(key))
        if fields is None or (key == "item_attribute" and pretraining):
            continue
        loaded = (values.get("load_col") or {}).get("item") or []
        for name in fields if isinstance(fields, list) else [fields]:
            if name not in loaded:
                raise ConfigError(
                    f"{where(key)}: {key}: item field {name!r} is not in load_col ({where('load_col')}); "
                    f"name fields of the .item file (genre, year, title...) and load them, "
                    f"e.g. load_col: {{inter: [user_id, item_id, timestamp], item: [item_id, genre]}}"
                )


def _check_filter(values, sources):
    """filter: {future_items: N}: N an integer >= 0 or ~ (off), on data whose films have years."""
    section, where = values["filter"], sources.get("filter", "settings")
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: filter: expected {{future_items: N}}, got {section!r}")
    for key in section:
        if key not in FILTERS:
            source = sources.get(f"filter.{key}", where)
            raise ConfigError(f"{source}: filter: unknown entry {key!r}{did_you_mean(key, FILTERS)}")
    years, where = section.get("future_items"), sources.get("filter.future_items", where)
    if years is None:
        return
    if not is_int(years) or years < 0:
        raise ConfigError(f"{where}: filter.future_items must be an integer >= 0 or ~ (off), got {years!r}")
    fields, data = data_item_fields(values.get("data"))
    if "year" not in fields:
        raise ConfigError(f"{where}: filter.future_items needs the films' years: {data} has no years.tsv or titles.tsv")
