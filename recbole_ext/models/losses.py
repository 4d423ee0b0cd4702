r"""Losses of whole-sequence training: every real position t of a window is one target.

h is the encoder output at the positions with a target (N x H), y their target
items, E the item embedding table (row 0 is the padding item, never a target
nor a candidate), b an optional per-item output bias:

    CE    mean_t  -log softmax(h_t E^T + b)[y_t]                  over all items
    gBCE  mean_t  -beta log sigmoid(s_t,y) - sum_j log(1 - sigmoid(s_t,n_j))
          k = neg_samples items n_j drawn uniformly for the batch, alpha = k / (|I| - 1),
          beta = alpha (t (1 - 1/alpha) + 1/alpha), t = gbce_t in [0, 1]
    BPR   mean_t  -log sigmoid(s_t,y - s_t,n_t)                   one uniform negative per target

CE is Klenitskiy & Vasilev (RecSys 2023), gBCE Petrov & Macdonald (RecSys 2023):
t = 0 is plain BCE with k negatives, t = 1 calibrates the positive's
probability to the full softmax. The gBCE negatives are shared by the
targets of a batch: each target still sees k uniform negatives (what beta
corrects for), and the scores take N x k memory instead of N x k x H.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

LOSS_TYPES = ("CE", "gBCE", "BPR")
# CE scores at most this many (target, item) pairs at once (128 MB of float32 logits); above it the logits are
# computed in chunks whose backward recomputes them, so the peak holds one chunk (batch x length x items is
# 25600 x 6807 = 174M scores at competition scale).
MAX_LOGITS = 1 << 25


def sequence_loss(loss_type, hidden, targets, embedding, bias=None, neg_samples=1, gbce_t=0.0):
    if loss_type == "CE":
        return softmax_cross_entropy(hidden, targets, embedding, bias)
    if loss_type == "gBCE":
        return gbce(hidden, targets, embedding, neg_samples, gbce_t, bias)
    if loss_type == "BPR":
        return bpr(hidden, targets, embedding, bias)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def softmax_cross_entropy(hidden, targets, embedding, bias=None, max_logits=MAX_LOGITS):
    candidates, candidate_bias = embedding[1:], None if bias is None else bias[1:]  # no padding item
    rows = max(1, max_logits // len(candidates))
    if len(hidden) <= rows:
        return _summed_cross_entropy(hidden, targets - 1, candidates, candidate_bias) / len(hidden)
    total = hidden.new_zeros(())
    for h, y in zip(hidden.split(rows), (targets - 1).split(rows)):
        total = total + checkpoint(_summed_cross_entropy, h, y, candidates, candidate_bias, use_reentrant=False)
    return total / len(hidden)


def _summed_cross_entropy(hidden, targets, candidates, bias):
    logits = hidden @ candidates.T
    if bias is not None:
        logits = logits + bias
    return F.cross_entropy(logits, targets, reduction="sum")


def gbce_beta(neg_samples, n_items, t):
    """beta of gBCE for k = neg_samples negatives among n_items real items."""
    alpha = neg_samples / (n_items - 1)
    return alpha * (t * (1 - 1 / alpha) + 1 / alpha)


def gbce(hidden, targets, embedding, neg_samples, t, bias=None):
    n_items = len(embedding) - 1  # real items: ids 1 .. len - 1
    negatives = torch.randint(1, len(embedding), (neg_samples,), device=hidden.device)
    positive = _scores(hidden, targets, embedding, bias)
    negative = hidden @ embedding[negatives].T
    if bias is not None:
        negative = negative + bias[negatives]
    beta = gbce_beta(neg_samples, n_items, t)
    return (beta * F.softplus(-positive) + F.softplus(negative).sum(-1)).mean()


def bpr(hidden, targets, embedding, bias=None):
    negatives = torch.randint(1, len(embedding), targets.shape, device=hidden.device)
    return F.softplus(_scores(hidden, negatives, embedding, bias) - _scores(hidden, targets, embedding, bias)).mean()


def _scores(hidden, items, embedding, bias):
    scores = (hidden * embedding[items]).sum(-1)
    return scores if bias is None else scores + bias[items]
