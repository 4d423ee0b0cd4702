"""RecBole's Config for one fit of a run: the settings' RecBole values, the device, and the
negative-sampling defaults of implicit feedback.
"""

import os

import torch
from recbole.config import Config
from recbole.utils import ModelType

from recbole_ext import ConfigError, registry


def resolve_device(setting):
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but torch sees no GPU (is the CUDA build of torch installed?)")
    return setting


def implicit_feedback_sampling(settings):
    """Negative sampling for implicit data, unless the settings choose it.

    Every interaction is a positive: context-aware models need sampled
    negatives as their 0 labels (RecBole's defaults expect labelled data);
    sequential models with the CE loss score all items and sample nothing.
    """
    if "train_neg_sample_args" in settings.values:
        return {}
    loss_type = settings.values.get("loss_type", registry.model_properties(settings.model).get("loss_type"))
    if settings.model_type == ModelType.CONTEXT:
        return {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}
    if settings.model_type == ModelType.SEQUENTIAL and loss_type == "CE":
        return {"train_neg_sample_args": None}
    return {}


def recbole_config(settings, data_path, dataset_name, checkpoint_dir, **changes):
    """RecBole's Config for one fit of this run."""
    device = resolve_device(settings["device"])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    config_dict = {**implicit_feedback_sampling(settings), **settings.recbole_values()}
    config_dict.update(
        data_path=str(data_path),
        checkpoint_dir=str(checkpoint_dir),
        valid_metric=settings["valid_metric"].lower(),
        # RecBole writes gpu_id into CUDA_VISIBLE_DEVICES: keep what a scheduler (Ray) set
        gpu_id=visible if visible is not None else "0",
        use_gpu=device == "cuda",
        **changes,
    )
    config = Config(model=settings.model, dataset=dataset_name, config_dict=config_dict)
    if visible is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    config["device"] = torch.device(device)
    return config
