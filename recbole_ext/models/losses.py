r"""Losses of whole-sequence training: every target position t of a batch of windows counts once.

h_t is the encoder output at a target position, y_t its target item, E the
item embedding table (row 0 is the padding item, never a target nor a
candidate), b an optional per-item output bias, s_t,i = h_t . e_i + b_i:

    CE    mean_t  -log softmax(s_t,:)[y_t]                     over all items
    gBCE  mean_t  -beta log sigmoid(s_t,y + c) - sum_j log(1 - sigmoid(s_t,n_j + c))
          k = neg_samples items n_j drawn uniformly, alpha = k / (|I| - 1),
          beta = alpha (t (1 - 1/alpha) + 1/alpha), t = gbce_t in [0, 1], c = -log(k)
    BPR   mean_t  -log sigmoid(s_t,y - s_t,n_t)                one uniform negative per target

CE is Klenitskiy & Vasilev (RecSys 2023), gBCE Petrov & Macdonald (RecSys 2023):
t = 0 is plain BCE with k negatives, t = 1 calibrates the positive's
probability to the full softmax. The constant c is movierec's: it shifts
every logit (the ranking is unchanged) so that training starts where plain
BCE's positive pull (sigmoid(-c)) and its k negatives' push (k sigmoid(c))
balance, and gbce_t's beta then tips that balance as the paper intends.
Started at 0 instead, RecBole's SASRec encoder answered the k-fold push by
turning every output into one shared direction that scores all items low: on
MovieLens-100K its outputs kept 0.1% of their variance across positions (CE:
40% after 4 epochs) and Recall@10 stayed at popularity's for 90 epochs.
The gBCE negatives of a window are shared by its positions: each target
still sees k uniform negatives (what beta corrects for), the scores take B x L x k memory instead of B x L x k x H,
and every item is a negative in about as many windows at every step (one
draw for the whole batch would hit a few items with all its positions at
once, a spiky gradient that Adam follows badly).
"""

import math

import torch
import torch.nn.functional as F

LOSS_TYPES = ("CE", "gBCE", "BPR")
# CE scores at most this many (target, item) pairs at once (128 MB of float32 logits), so that the peak holds one
# chunk (batch x length x items is 25600 x 6807 = 174M scores at competition scale).
MAX_LOGITS = 1 << 25


def sequence_loss(loss_type, hidden, targets, embedding, bias=None, neg_samples=1, gbce_t=0.0):
    """The loss of a batch: hidden (B, L, H) encoder outputs, targets (B, L) items, 0 where no target."""
    real = targets > 0
    if loss_type == "CE":
        return softmax_cross_entropy(hidden[real], targets[real], embedding, bias)
    if loss_type == "gBCE":
        return gbce(hidden, targets, embedding, neg_samples, gbce_t, bias)
    if loss_type == "BPR":
        return bpr(hidden[real], targets[real], embedding, bias)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def softmax_cross_entropy(hidden, targets, embedding, bias=None, max_logits=MAX_LOGITS):
    """CE over all items of hidden (N, H) against targets (N,)."""
    candidates, candidate_bias = embedding[1:], None if bias is None else bias[1:]  # no padding item
    rows = max(1, max_logits // len(candidates))
    return _ChunkedCrossEntropy.apply(hidden, targets - 1, candidates, candidate_bias, rows) / len(hidden)


class _ChunkedCrossEntropy(torch.autograd.Function):
    """The summed CE of hidden (N, H) against targets (N,) over the candidates (items, H), rows targets at a time.

    The gradient of CE with respect to the logits is softmax minus the one-hot target: each chunk's gradients
    are computed in the forward pass, from the logits it holds anyway, and only the (N, H) and (items, H)
    gradients are kept. Autograd's backward through chunked logits would have to keep every chunk (the peak
    the chunks avoid) or recompute their logits (checkpointing: a fourth large product per chunk, ~1.5x the
    loss's time at ml-latest-small's 9,615 films).
    """

    @staticmethod
    def forward(ctx, hidden, targets, candidates, bias, rows):
        total = hidden.new_zeros((), dtype=torch.float32)
        grad_hidden = torch.empty_like(hidden)
        grad_candidates = torch.zeros_like(candidates, dtype=torch.float32)
        grad_bias = None if bias is None else torch.zeros_like(bias, dtype=torch.float32)
        for start in range(0, len(hidden), rows):
            h, y = hidden[start : start + rows], targets[start : start + rows]
            logits = h @ candidates.T
            if bias is not None:
                logits = logits + bias
            logits = logits.float()
            normaliser = torch.logsumexp(logits, dim=1, keepdim=True)
            total += (normaliser.squeeze(1) - logits.gather(1, y.unsqueeze(1)).squeeze(1)).sum()
            gradient = logits.sub_(normaliser).exp_()  # softmax, in the logits' storage
            gradient[torch.arange(len(y), device=y.device), y] -= 1
            grad_hidden[start : start + rows] = gradient.to(candidates.dtype) @ candidates
            grad_candidates += gradient.T @ h.float()
            if grad_bias is not None:
                grad_bias += gradient.sum(0)
        ctx.save_for_backward(grad_hidden, grad_candidates, grad_bias)
        ctx.dtypes = candidates.dtype, None if bias is None else bias.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_candidates, grad_bias = ctx.saved_tensors
        candidates_dtype, bias_dtype = ctx.dtypes
        return (
            grad_hidden * grad_total,
            None,
            (grad_candidates * grad_total).to(candidates_dtype),
            None if grad_bias is None else (grad_bias * grad_total).to(bias_dtype),
            None,
        )


def gbce_beta(neg_samples, n_items, t):
    """beta of gBCE for k = neg_samples negatives among n_items real items."""
    alpha = neg_samples / (n_items - 1)
    return alpha * (t * (1 - 1 / alpha) + 1 / alpha)


def gbce(hidden, targets, embedding, neg_samples, t, bias=None):
    """gBCE of hidden (B, L, H) against targets (B, L), 0 where no target; k negatives per window."""
    real = targets > 0
    n_items = len(embedding) - 1  # real items: ids 1 .. len - 1
    negatives = torch.randint(1, len(embedding), (len(hidden), neg_samples), device=hidden.device)
    negative = torch.bmm(hidden, embedding[negatives].transpose(1, 2))  # (B, L, k)
    if bias is not None:
        negative = negative + bias[negatives].unsqueeze(1)
    beta = gbce_beta(neg_samples, n_items, t)
    offset = -math.log(neg_samples)
    positive = _scores(hidden[real], targets[real], embedding, bias) + offset
    return (beta * F.softplus(-positive) + F.softplus(negative[real] + offset).sum(-1)).mean()


def bpr(hidden, targets, embedding, bias=None):
    """BPR of hidden (N, H) against targets (N,), one uniform negative each."""
    negatives = torch.randint(1, len(embedding), targets.shape, device=hidden.device)
    return F.softplus(_scores(hidden, negatives, embedding, bias) - _scores(hidden, targets, embedding, bias)).mean()


def _scores(hidden, items, embedding, bias):
    scores = (hidden * embedding[items]).sum(-1)
    return scores if bias is None else scores + bias[items]
