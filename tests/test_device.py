"""Device correctness without a GPU: every tensor the model code creates is made on its inputs' device.

On a GPU, a tensor created without device= lands on the CPU and meets CUDA tensors: the first run on the
GPU stops there. Here the models and their inputs live on the CPU while the *default* device is torch's
`meta` device, so a tensor created without device= becomes a meta tensor: the check records every
operation that produced one. Nothing in the code under test should.
"""

import pytest
import torch
from recbole.utils import init_seed
from test_sequential import built
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from recbole_ext.config.settings import load_settings
from recbole_ext.data.dataset import History, load_dataset
from recbole_ext.data.future import FutureItems
from recbole_ext.models.losses import LOSS_TYPES, sequence_loss
from recbole_ext.patches import registry
from recbole_ext.trainer.predict import top_k
from recbole_ext.trainer.recbole_config import recbole_config


class MadeOffDevice(TorchDispatchMode):
    """Records the operations whose output is on the meta device."""

    def __init__(self):
        super().__init__()
        self.operations = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in tree_flatten(out)[0]):
            self.operations.append(str(func))
        return out


def operations_off_device(function):
    """The operations of function() that made a tensor on the default device instead of its inputs'."""
    check = MadeOffDevice()
    with torch.device("meta"), check:
        function()
    return check.operations


def test_the_check_catches_a_tensor_created_without_a_device():
    x = torch.ones(3)
    assert operations_off_device(lambda: x * 2) == []
    assert operations_off_device(lambda: torch.arange(3, device=x.device) + x) == []
    assert "aten.arange.default" in operations_off_device(lambda: torch.arange(3))


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_losses_create_their_tensors_on_the_inputs_device(loss_type):
    hidden = torch.randn(4, 5, 8, requires_grad=True)
    embedding = torch.randn(30, 8, requires_grad=True)
    targets = torch.randint(0, 30, (4, 5))  # 0: padding, ignored

    def loss_and_gradients():
        sequence_loss(loss_type, hidden, targets, embedding, neg_samples=3, gbce_t=0.75).backward()

    assert operations_off_device(loss_and_gradients) == []


@pytest.mark.parametrize(
    "model, overrides",
    [
        ("SASRec", ["loss_type=CE"]),
        ("SASRec", ["loss_type=gBCE", "neg_samples=5"]),
        ("SASRec", ["loss_type=BPR"]),
        ("BERT4Rec", []),
        ("SASRec", ["item_attributes=[genre, year]"]),
        ("BERT4Rec", ["item_attributes=[genre]"]),
    ],
)
def test_window_models_train_and_score_on_the_inputs_device(tiny_prepared, tmp_path, model, overrides):
    config, dataset, loader = built(tiny_prepared, tmp_path, model, *overrides)
    init_seed(config["seed"], True)
    network = registry.get_model(model)(config, dataset)
    history = History.from_file(dataset, tiny_prepared.inter_path(tiny_prepared.valid_name))
    batch = next(iter(loader))

    assert operations_off_device(lambda: network.calculate_loss(batch).backward()) == []
    assert operations_off_device(lambda: top_k(network, dataset, history, 10)) == []


@pytest.mark.parametrize("model", ["EASE", "UserEASE"])
def test_ease_fits_and_scores_on_its_device(tiny_prepared, tmp_path, model):
    config = recbole_config(
        load_settings(model, overrides=["state=ERROR"]), tiny_prepared.data_path, tiny_prepared.valid_name, tmp_path
    )
    dataset = load_dataset(config)
    network = registry.get_model(model)(config, dataset)
    history = History.from_file(dataset, tiny_prepared.inter_path(tiny_prepared.valid_name))

    assert operations_off_device(network.fit) == []
    assert operations_off_device(lambda: top_k(network, dataset, history, 10)) == []
    future = FutureItems(dataset, 0)
    assert operations_off_device(lambda: top_k(network, dataset, history, 10, future=future)) == []
