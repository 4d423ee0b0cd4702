"""A run's settings resolved once for the stages that train and score (``resolve``), and RecBole's
Config for each fit of the run: the settings' RecBole values, the device, and the negative-sampling
defaults of implicit feedback.
"""

import copy
import os
from dataclasses import dataclass

import torch
from recbole.config import Config
from recbole.utils import ModelType

from recbole_ext import ConfigError
from recbole_ext.models.window_trainer import amp_problem
from recbole_ext.patches import registry


def resolve_device(settings):
    """cpu or cuda, as the settings' device asks; refuses a missing GPU, and an amp the device cannot run."""
    device = settings["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but torch sees no GPU (is the CUDA build of torch installed?)")
    problem = "amp" in settings.values and amp_problem(settings["amp"], device)
    if problem:
        raise ConfigError(f"{settings.sources.get('amp', 'settings')}: {problem} (device: {device})")
    return device


@dataclass(frozen=True)
class Resolved:
    """What every stage of a run reads, resolved once from its settings."""

    settings: object  # config.Settings
    model_class: type
    device: str  # cpu or cuda
    recbole_values: dict  # what each fit's Config starts from: the RecBole settings and sampling defaults

    @property
    def name(self):
        return self.settings.model

    def config(self, data_path, dataset_name, checkpoint_dir, **changes):
        """RecBole's Config for one fit of this run."""
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        config_dict = {
            **copy.deepcopy(self.recbole_values),  # RecBole's Config may change what it is given
            "data_path": str(data_path),
            "checkpoint_dir": str(checkpoint_dir),
            "valid_metric": self.settings["valid_metric"].lower(),
            # RecBole writes gpu_id into CUDA_VISIBLE_DEVICES: keep what a scheduler (Ray) set
            "gpu_id": visible if visible is not None else "0",
            "use_gpu": self.device == "cuda",
            **changes,
        }
        config = Config(model=self.name, dataset=dataset_name, config_dict=config_dict)
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        config["device"] = torch.device(self.device)
        return config


def resolve(settings):
    """The settings of a checked run, resolved; a missing GPU is refused here (ConfigError)."""
    model_class = registry.get_model(settings.model)
    sampling = implicit_feedback_sampling(settings, model_class.type)
    return Resolved(settings, model_class, resolve_device(settings), {**sampling, **settings.recbole_values()})


def recbole_config(settings, data_path, dataset_name, checkpoint_dir, **changes):
    """RecBole's Config for one fit with these settings."""
    return resolve(settings).config(data_path, dataset_name, checkpoint_dir, **changes)


def implicit_feedback_sampling(settings, model_type):
    """Negative sampling for implicit data, unless the settings choose it.

    Every interaction is a positive: context-aware models need sampled
    negatives as their 0 labels (RecBole's defaults expect labelled data);
    sequential models with the CE loss score all items and sample nothing.
    """
    if "train_neg_sample_args" in settings.values:
        return {}
    loss_type = settings.values.get("loss_type", registry.model_properties(settings.model).get("loss_type"))
    if model_type == ModelType.CONTEXT:
        return {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}
    if model_type == ModelType.SEQUENTIAL and loss_type == "CE":
        return {"train_neg_sample_args": None}
    return {}
