"""check_settings: every value of a run's settings checked, each message naming the layer it came from."""

import importlib.util
import re
from pathlib import Path

from atomic_data import HoldoutRule
from recbole_ext import ConfigError
from recbole_ext.config.keys import FILTERS, MANAGED, check_values, did_you_mean, is_int, known_keys
from recbole_ext.data.item_file import data_item_fields
from recbole_ext.evaluator.calibration import check_parts
from recbole_ext.evaluator.metrics import OBJECTIVE_TEXT, parse_objective
from recbole_ext.patches import registry
from recbole_ext.utils import tracking


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


def _is_objective(value):
    try:
        return bool(parse_objective(value))
    except ValueError:
        return False


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
