"""The trainer of movierec's window-trained models (SASRec, BERT4Rec): RecBole's, with mixed precision.

``amp`` chooses the precision of the forward pass and the loss:

    off    float32 everywhere (the default)
    fp16   float16 autocast with a gradient scaler: for GPUs without bfloat16 (a V100's tensor cores); refused on a CPU
    bf16   bfloat16 autocast, no scaler needed (the range of float32): GPUs from the A100 on, and CPUs

The weights, the optimizer and top-k scoring stay float32: only the activations (above all the CE loss's
batch x length x items scores) are held in half precision. RecBole's own ``enable_amp`` / ``enable_scaler``
pick fp16 on CUDA and bf16 on a CPU with no choice, and make a new scaler each epoch; these models refuse them.
"""

import torch
from recbole.trainer import Trainer
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

AMP_MODES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def amp_mode(setting):
    """The mode name of an amp setting: yaml reads a bare `off` as false."""
    return "off" if setting is False else setting


def amp_problem(setting, device):
    """Why the amp setting cannot run on device ('cpu' or 'cuda'), or None."""
    mode = amp_mode(setting)
    if mode not in AMP_MODES:
        return f"amp must be off, fp16 or bf16, got {setting!r}"
    if mode == "fp16" and device == "cpu":
        return "amp: fp16 is for GPUs without bfloat16; on a CPU use bf16 (float32's range, no gradient scaler), or off"
    # torch's default check counts emulated bfloat16 as support: a V100 passes it, without bfloat16 tensor cores
    if mode == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return f"amp: bf16 is not supported by {torch.cuda.get_device_name()} (a V100 has none); use fp16"
    return None


class WindowTrainer(Trainer):
    """RecBole's Trainer; each step runs under the amp setting's autocast, fp16 with a gradient scaler."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.amp_dtype = AMP_MODES[amp_mode(config["amp"])]
        # one scaler for the whole run: its scale adapts over the steps (RecBole's restarts every epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.train()
        loss_func = loss_func or self.model.calculate_loss
        batches = (
            tqdm(train_data, total=len(train_data), ncols=100, desc=f"Train {epoch_idx:>5}")
            if show_progress
            else train_data
        )
        return sum(self.train_step(interaction, loss_func) for interaction in batches)

    def train_step(self, interaction, loss_func=None):
        """One optimizer step on one batch; returns its loss."""
        loss_func = loss_func or self.model.calculate_loss
        self.optimizer.zero_grad()
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            loss = loss_func(interaction.to(self.device))
        self._check_nan(loss)
        self.scaler.scale(loss).backward()
        if self.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.item()
