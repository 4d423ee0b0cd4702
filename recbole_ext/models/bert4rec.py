"""BERT4Rec (Sun et al., CIKM 2019) trained the original way: masked items over whole user windows.

RecBole's BERT4Rec (its encoder, output layer, tensor names, settings and
checkpoints are kept) masks items inside every prefix of every user: one
sample per interaction. Here a sample is a window of up to
L = MAX_ITEM_LIST_LENGTH items of a user (``recbole_ext.data.dataset.SequenceWindows``):
each real item is replaced by the mask token with probability ``mask_ratio``
and the bidirectional encoder's output at each masked position is scored
against the item that was there (``loss_type``, ``recbole_ext.models.losses``;
with the output bias). With probability ``ft_ratio`` a window masks only its
last item (RecBole's fine-tuning samples: the prediction task), as does a
window in which no item was drawn.

Prediction appends the mask token after the user's latest items (the last
L - 1 when the history fills the window) and scores from its output.
RecBole's version drops the first item of every sequence to make room, also
when the sequence is shorter than the window. RecBole's original stays
reachable as ``RecBoleBERT4Rec``.
"""

import torch
from recbole.model.sequential_recommender.bert4rec import BERT4Rec as RecBoleBERT4Rec

from recbole_ext.models.losses import sequence_loss
from recbole_ext.models.sasrec import (
    WINDOW_SETTINGS,
    WindowTrained,
    check_settings,  # noqa: F401  (the registry finds it here)
)
from recbole_ext.models.window_trainer import WindowTrainer
from recbole_ext.patches.registry import recbole_properties

PROPERTIES = {**recbole_properties("BERT4Rec"), **WINDOW_SETTINGS}
del PROPERTIES["transform"]  # RecBole's dataloader masks with it; here the model masks on its device
BERT4RecTrainer = WindowTrainer


class BERT4Rec(WindowTrained, RecBoleBERT4Rec):
    TRAINING_WINDOW = "masked"  # windows of L items, some replaced by the mask token

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.ft_ratio = config["ft_ratio"]

    def forward(self, item_seq):
        """RecBole's encoder pass (B, L, H), its input from embed_items (the item attributes added)."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        embedded = self.dropout(self.LayerNorm(self.embed_items(item_seq) + self.position_embedding(positions)))
        mask = self.get_attention_mask(item_seq, bidirectional=True)
        hidden = self.trm_encoder(embedded, mask, output_all_encoded_layers=True)[-1]
        return self.output_ln(self.output_gelu(self.output_ffn(hidden)))

    def training_mask(self, item_seq, item_seq_len):
        """The positions to mask in a batch of windows (B, L) bool."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
        real = positions < item_seq_len.unsqueeze(1)
        last = positions == (item_seq_len - 1).unsqueeze(1)
        drawn = real & (torch.rand(item_seq.shape, device=item_seq.device) < self.mask_ratio)
        only_last = (torch.rand(len(item_seq), device=item_seq.device) < self.ft_ratio) | ~drawn.any(1)
        return torch.where(only_last.unsqueeze(1), last, drawn)

    def calculate_loss(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        masked = self.training_mask(item_seq, item_seq_len)
        hidden = self.forward(item_seq.masked_fill(masked, self.mask_token))
        targets = item_seq.masked_fill(~masked, 0)  # the masked items, 0 elsewhere
        return sequence_loss(
            self.loss_type,
            hidden,
            targets,
            self.item_embedding.weight[: self.n_items],
            self.output_bias,
            neg_samples=self.neg_samples,
            gbce_t=self.gbce_t,
        )

    def reconstruct_test_data(self, item_seq, item_seq_len):
        """The latest items with the mask token after them, and the mask's position.

        A sequence that fills the L positions drops its oldest item to make room.
        """
        full = item_seq_len == item_seq.size(1)
        shifted = torch.where(full.unsqueeze(1), item_seq.roll(-1, dims=1), item_seq)
        mask_position = item_seq_len - full.long()
        shifted[torch.arange(len(shifted), device=shifted.device), mask_position] = self.mask_token
        return shifted, mask_position

    def mask_output(self, interaction):
        """The encoder's output at the appended mask token (B, H)."""
        item_seq, mask_position = self.reconstruct_test_data(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return self.gather_indexes(self.forward(item_seq), mask_position)

    def predict(self, interaction):
        items = interaction[self.ITEM_ID]
        return (self.mask_output(interaction) * self.item_embedding(items)).sum(-1) + self.output_bias[items]

    def full_sort_predict(self, interaction):
        return self.mask_output(interaction) @ self.item_embedding.weight[: self.n_items].T + self.output_bias
