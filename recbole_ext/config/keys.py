"""What a setting may be: movierec's own keys, those movierec manages, every key RecBole reads for a model,
and the kind of value each takes (an integer, a number in its range, true or false)."""

import difflib
import math
import re
from pathlib import Path

from recbole.utils.argument_list import dataset_arguments, evaluation_arguments, general_arguments, training_arguments

import yaml
from atomic_data import BASE_YAML
from recbole_ext import ConfigError
from recbole_ext.patches import registry

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


FILTERS = {"future_items"}  # the entries of filter: (recbole_ext/data/future.py)


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


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite(value):
    """A number, neither infinite nor NaN (yaml's .inf, .nan)."""
    return is_number(value) and math.isfinite(value)


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)
