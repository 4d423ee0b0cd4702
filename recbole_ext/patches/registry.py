"""movierec's models inside RecBole's own lookups.

RecBole finds a model by importing ``recbole.model.<kind>_recommender.<name>``
and its trainer by the name ``<Model>Trainer`` in ``recbole.trainer``; a
model's defaults come from ``recbole/properties/model/<Model>.yaml``. The
registry extends all three, so ``run.py``, RecBole's ``get_model`` /
``get_trainer`` / ``Config`` and checkpoint loading treat custom models like
built-in ones. Adding a model: docs/models.md, *Adding a model*.

Importing this module first patches RecBole for the current stack (compat),
then installs the lookups and movierec's metric: every module that uses
RecBole imports it, so every entry point (run.py, tune.py, Ray workers,
tests) gets both before RecBole is used.
"""

import functools
import importlib
import importlib.util
import re
from pathlib import Path

import yaml
from recbole_ext.evaluator import metrics
from recbole_ext.patches import compat

compat.apply()

from recbole.utils import ModelType  # noqa: E402
from recbole.utils import utils as recbole_utils  # noqa: E402

CUSTOM_MODELS = {  # model name: module that defines it
    "EASE": "recbole_ext.models.ease",
    "UserEASE": "recbole_ext.models.user_ease",
    "S3Rec": "recbole_ext.models.s3rec",
    "SASRec": "recbole_ext.models.sasrec",
    "BERT4Rec": "recbole_ext.models.bert4rec",
}

# RecBole's own class under another name, where a custom model took the name
ALIASES = {  # alias: RecBole's model name
    "RecBoleEASE": "EASE",  # for comparison with movierec's EASE
    "RecBoleS3Rec": "S3Rec",  # one attribute, pretraining and finetuning as two runs
    "RecBoleSASRec": "SASRec",  # trained on every prefix as its own sample
    "RecBoleBERT4Rec": "BERT4Rec",  # trained on every prefix as its own sample
}


class YamlLoader(yaml.SafeLoader):
    """Safe yaml with RecBole's float rule: 1e-4 is a float, not a string."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)

# packages a model imports only when it trains: refused before any work when missing
OPTIONAL_PACKAGES = {  # model: (module it imports, what to pip install)
    "NCL": ("faiss", "faiss-cpu"),  # k-means of the embeddings (faiss.Kmeans) every epoch
}

# settings a model supports one value of: RecBole's model calls sys.exit(0) on any other, after data preparation
ONLY_VALUES = {
    "GRU4RecCPR": {"loss_type": "CE"},
    "SASRecCPR": {"loss_type": "CE"},
}

_recbole_get_model = recbole_utils.get_model
_recbole_get_trainer = recbole_utils.get_trainer
RECBOLE_PROPERTIES = Path(recbole_utils.__file__).resolve().parent.parent / "properties" / "model"
RECBOLE_MODELS = RECBOLE_PROPERTIES.parent.parent / "model"
# RecBole's model packages that import without optional packages (exlib_recommender needs xgboost and lightgbm)
RECBOLE_MODEL_PACKAGES = ("general", "sequential", "context_aware", "knowledge_aware")


def _custom(model_name, attribute):
    """An attribute of a custom model's module (None when absent or not a custom model)."""
    if model_name not in CUSTOM_MODELS:
        return None
    return getattr(importlib.import_module(CUSTOM_MODELS[model_name]), attribute, None)


def get_model(model_name):
    return _custom(model_name, model_name) or _recbole_get_model(ALIASES.get(model_name, model_name))


def get_trainer(model_type, model_name):
    trainer = _custom(model_name, f"{model_name}Trainer")
    return trainer or _recbole_get_trainer(model_type, ALIASES.get(model_name, model_name))


def settings_check(model_name):
    """A custom model's own check_settings(values, where), run before anything else; None for others."""
    return _custom(model_name, "check_settings")


def data_check(model_name):
    """A custom model's check_data(values, counts, device) on the prepared data's counts, run before its
    dataset is built; None for others."""
    return _custom(model_name, "check_data")


def model_properties(model_name):
    """A model's settings with their defaults (RecBole's yaml or PROPERTIES)."""
    if model_name in CUSTOM_MODELS:
        return dict(_custom(model_name, "PROPERTIES"))
    return recbole_properties(ALIASES.get(model_name, model_name))


def recbole_properties(recbole_name):
    """The settings and defaults of RecBole's own model of that name ({} if it has no property file)."""
    path = RECBOLE_PROPERTIES / f"{recbole_name}.yaml"
    return (yaml.load(path.read_text(), Loader=YamlLoader) or {}) if path.is_file() else {}


def model_names():
    """Every model name run.py accepts: RecBole's, aliases and custom ones."""
    return sorted(_recbole_model_names() | set(ALIASES) | set(CUSTOM_MODELS))


@functools.cache
def _recbole_model_names():
    """RecBole's models: those with a property file, and the model classes its packages export
    (Random has no property file)."""
    from recbole.model.abstract_recommender import AbstractRecommender

    names = {path.stem for path in RECBOLE_PROPERTIES.glob("*.yaml")}
    for kind in RECBOLE_MODEL_PACKAGES:
        package = importlib.import_module(f"recbole.model.{kind}_recommender")
        names |= {
            name
            for name, value in vars(package).items()
            if isinstance(value, type) and issubclass(value, AbstractRecommender)
        }
    return frozenset(names)


def is_decision_tree(model_name):
    """RecBole's xgboost and lightgbm wrappers, known by their module (it cannot be imported without both)."""
    return (RECBOLE_MODELS / "exlib_recommender" / f"{ALIASES.get(model_name, model_name).lower()}.py").is_file()


def reads_knowledge_graph(model_name):
    """A model whose RecBole dataset class reads a knowledge graph: the knowledge-aware models and
    GRU4RecKG, KSR (sequential models on pretrained entity embeddings)."""
    import recbole.data.dataset as datasets

    if get_model(model_name).type == ModelType.KNOWLEDGE:
        return True
    own_dataset = getattr(datasets, f"{ALIASES.get(model_name, model_name)}Dataset", None)
    return own_dataset is not None and issubclass(own_dataset, datasets.KnowledgeBasedDataset)


def missing_package(model_name):
    """(module, pip name) of an optional package the model needs and this environment lacks, or None."""
    module, pip_name = OPTIONAL_PACKAGES.get(ALIASES.get(model_name, model_name), (None, None))
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return module, pip_name


def install():
    """Put the lookups above where RecBole's modules call them; register movierec's metric."""
    import recbole.config.configurator as configurator
    import recbole.quick_start.quick_start as quick_start
    import recbole.utils

    for module in (recbole.utils, recbole_utils, configurator, quick_start):
        module.get_model = get_model
    for module in (recbole.utils, recbole_utils, quick_start):
        module.get_trainer = get_trainer

    load_internal = configurator.Config._load_internal_config_dict

    def _load_internal_config_dict(self, model, model_class, dataset):
        load_internal(self, model, model_class, dataset)
        if model in CUSTOM_MODELS or model in ALIASES:
            self.internal_config_dict.update(model_properties(model))

    configurator.Config._load_internal_config_dict = _load_internal_config_dict
    metrics.install()


install()
