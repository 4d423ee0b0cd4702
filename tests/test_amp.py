"""Mixed precision of the window-trained models (amp: off | fp16 | bf16), measured on the CPU with bf16."""

import re

import pytest
import torch
from recbole.utils import init_seed
from test_sequential import built

from recbole_ext import ConfigError
from recbole_ext.config.settings import load_settings
from recbole_ext.models.window_trainer import WindowTrainer
from recbole_ext.patches import registry
from recbole_ext.trainer.recbole_config import resolve_device


def model_and_batch(prepared, tmp_path, model, *overrides):
    config, dataset, loader = built(
        prepared, tmp_path, model, "hidden_dropout_prob=0", "attn_dropout_prob=0", *overrides
    )
    init_seed(config["seed"], True)
    return config, registry.get_model(model)(config, dataset), next(iter(loader))


@pytest.mark.parametrize("model, loss_type", [("SASRec", "CE"), ("BERT4Rec", "CE"), ("SASRec", "BPR")])
def test_bf16_loss_matches_fp32_within_its_precision(tiny_prepared, tmp_path, model, loss_type):
    _, network, batch = model_and_batch(tiny_prepared, tmp_path, model, f"loss_type={loss_type}")
    network.eval()  # same masks and no dropout: the two passes differ by precision alone

    def loss():
        torch.manual_seed(0)  # BERT4Rec's masks and BPR's negatives: the same draw in both passes
        return network.calculate_loss(batch)

    fp32 = loss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = loss()
    assert fp32.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: about 0.4% per operation, far below the loss's change in a step
    assert bf16.item() == pytest.approx(fp32.item(), rel=0.02)


@pytest.mark.parametrize("amp, layer_dtype", [("bf16", torch.bfloat16), ("off", torch.float32)])
def test_the_trainer_runs_the_layers_in_the_amp_precision_and_keeps_float32_weights(
    tiny_prepared, tmp_path, amp, layer_dtype
):
    config, network, batch = model_and_batch(tiny_prepared, tmp_path, "SASRec", f"amp={amp}")
    trainer = WindowTrainer(config, network)
    seen = []
    network.trm_encoder.layer[0].feed_forward.dense_1.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    before = network.item_embedding.weight.detach().clone()

    loss = trainer.train_step(batch)

    assert seen == [layer_dtype]
    assert loss == pytest.approx(loss)  # a number, not NaN
    assert all(p.dtype == torch.float32 for p in network.parameters())
    assert not torch.equal(before, network.item_embedding.weight)  # the optimizer stepped
    assert not trainer.scaler.is_enabled()  # the scaler is fp16's only


def test_fp16_steps_through_the_gradient_scaler_and_clips_the_true_gradients(tiny_prepared, tmp_path):
    # the settings refuse fp16 on a CPU, but torch runs it there: the scaler's path gets its first run here, not on a GPU
    config, network, batch = model_and_batch(tiny_prepared, tmp_path, "SASRec")
    config["amp"], config["clip_grad_norm"] = "fp16", {"max_norm": 1e-3}  # far below the gradient's norm: it clips
    trainer = WindowTrainer(config, network)
    seen = []
    network.trm_encoder.layer[0].feed_forward.dense_1.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    before = network.item_embedding.weight.detach().clone()

    loss = trainer.train_step(batch)

    assert seen == [torch.float16] and trainer.scaler.is_enabled()
    assert loss == pytest.approx(loss) and all(p.dtype == torch.float32 for p in network.parameters())
    assert not torch.equal(before, network.item_embedding.weight)
    # unscaled before clipping: the gradients' norm is max_norm, not max_norm / the scale (65536)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in network.parameters() if p.grad is not None]))
    assert norm.item() == pytest.approx(1e-3, rel=0.01)


def test_yaml_off_is_amp_off():
    # yaml reads a bare off as false: the setting means off, not a bad value
    assert load_settings("SASRec", overrides=["amp=off"])["amp"] in ("off", False)


def test_fp16_on_a_cpu_is_refused_with_the_reason():
    message = "amp: fp16 is for GPUs without bfloat16; on a CPU use bf16 (float32's range, no gradient scaler), or off"
    with pytest.raises(ConfigError, match=f"^command line: {re.escape(message)}$"):
        load_settings("SASRec", overrides=["amp=fp16", "device=cpu"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="device auto is a CPU only on a machine without CUDA")
def test_fp16_with_device_auto_is_refused_once_auto_is_a_cpu():
    settings = load_settings("BERT4Rec", overrides=["amp=fp16", "device=auto"])  # a GPU server would take it
    with pytest.raises(ConfigError, match=r"^command line: amp: fp16 is for GPUs without bfloat16; .*\(device: cpu\)$"):
        resolve_device(settings)
