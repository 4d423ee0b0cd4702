"""Run settings: the yaml layers merged by one rule, then checked (checks.py; keys.py says what a key may be).

Layers, later ones winning:

    yaml/base.yaml < yaml/<model>.yaml < --config FILE < its ``quick:`` block
    (with --quick) < key=value overrides (``holdout.seed=3`` reaches inside)

Every key must be a movierec setting (MOVIEREC_KEYS, defaults in
yaml/base.yaml) or a RecBole setting known for the model; anything else
stops with the file it came from and the closest valid name. RecBole never
sees sys.argv: everything reaches it through ``config_dict``
(recbole_ext/trainer/recbole_config.py builds RecBole's Config from the settings).
"""

import copy
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from atomic_data import BASE_YAML, HoldoutRule
from recbole_ext import ConfigError
from recbole_ext.config.checks import check_settings
from recbole_ext.config.keys import MOVIEREC_KEYS, SECTIONS, YAML_DIR, check_model, read_yaml
from recbole_ext.evaluator.calibration import resolve_objectives
from recbole_ext.patches import registry
from recbole_ext.utils import tracking


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
