r"""EASE: Embarrassingly Shallow Autoencoders (Steck, WWW 2019), with optional item side information.

X is the user-item matrix (users x items, 1 = seen), lambda = reg_weight:

    G = X^T X + lambda I
    P = G^{-1}                        by Cholesky: G = L L^T, P = L^{-T} L^{-1}
    B_ij = -P_ij / P_jj,  B_jj = 0    (the constraint diag(B) = 0)
    score(u, i) = X_u B_:i

Side information (off by default): each value v of an item field f (a genre,
a director, a year...) becomes a pseudo-user who has seen every item with
that value. A_f (values x items, 0/1) is stacked under X with weight w_f on
its rows, so the Gram matrix gets w_f^2 A_f^T A_f:

    G = X^T X + sum_f w_f^2 A_f^T A_f + lambda I

The pseudo-users only shape B; scores use the real users' rows. The model
keeps B as its only state: the checkpoint holds B, not X, and the closed
form runs in ``EASETrainer.fit``, not in the constructor, so loading a
checkpoint is cheap.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.trainer import Trainer
from recbole.utils import FeatureType, InputType, ModelType

from recbole_ext import ConfigError

PROPERTIES = {
    "reg_weight": 250.0,  # lambda, the L2 penalty on B
    "dtype": "float32",  # float32 | float64: precision of G, its Cholesky factor and B
    # item field -> weight w of its pseudo-user rows (the Gram matrix gets w^2 A^T A);
    # a field with w > 0 must be loaded: load_col: {item: [item_id, genre, ...]}; {} = off
    "side_weights": {},
    "train_neg_sample_args": None,  # the closed form never reads training batches: no sampler to build
}
DTYPES = ("float32", "float64")
CPU_GRAM_BLOCKS = 16  # blocks of rows of G computed in parallel on the CPU
GPU_GRAM_BLOCK = 4096  # rows of X densified at a time for the GPU


class EASE(GeneralRecommender):
    input_type = InputType.POINTWISE
    type = ModelType.TRADITIONAL

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.dtype = config["dtype"]
        self.reg_weight = float(config["reg_weight"])
        # X and the pseudo-users are inputs, not state: rebuilt from the dataset, never saved
        self.interactions = binary(dataset.inter_matrix(form="csr"))
        self.pseudo_users = side_rows(dataset, config["side_weights"] or {})
        self.register_buffer("B", torch.zeros(self.n_items, self.n_items, dtype=getattr(torch, self.dtype)))

    def fit(self):
        """The closed form, on the model's device, in the storage of B: one items x items matrix."""
        rows = sp.vstack([self.interactions, *self.pseudo_users], format="csr").astype(self.dtype)
        closed_form(rows, self.reg_weight, self.B)

    def full_sort_predict(self, interaction):
        users = interaction[self.USER_ID].cpu().numpy()
        return (dense_rows(self.interactions[users], self.B) @ self.B).view(-1)

    def predict(self, interaction):
        users = interaction[self.USER_ID].cpu().numpy()
        items = interaction[self.ITEM_ID].to(self.B.device)
        return (dense_rows(self.interactions[users], self.B) * self.B[:, items].T).sum(dim=1)


class EASETrainer(Trainer):
    """Fits the closed form once: one 'epoch', no pass over the training batches."""

    def _build_optimizer(self, **kwargs):
        # nothing to optimise; an empty optimizer keeps RecBole's checkpoint format
        return torch.optim.SGD([{"params": []}], lr=0.0)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self.eval_collector.data_collect(train_data)  # item counts, for RecBole's own metrics
        started = time.perf_counter()
        self.model.fit()
        self.train_loss_dict[0] = 0.0  # a closed form has no training loss
        if verbose:
            seconds = time.perf_counter() - started
            self.logger.info(f"{type(self.model).__name__} closed form ({self.model.dtype}) in {seconds:.2f}s")
        if valid_data is not None:
            self.best_valid_score, self.best_valid_result = self._valid_epoch(valid_data, show_progress)
        if saved:
            self._save_checkpoint(0, verbose=verbose)
        if valid_data is not None and callback_fn:
            callback_fn(0, self.best_valid_score)
        return self.best_valid_score, self.best_valid_result


def closed_form(rows, reg_weight, out, setting="reg_weight"):
    """EASE's B for the CSR rows (m x n), with lambda = reg_weight, in the storage of out (n x n, the dtype
    and device to compute in); returns out. setting: the name of lambda, for the error message."""
    G = gram(rows, out=out)
    G.diagonal().add_(reg_weight)
    # G is symmetric: its transpose is the column-major matrix LAPACK works on, so the factor and the
    # inverse are computed in its storage (given G itself, torch works on a column-major copy: twice the memory)
    T = G.mT
    try:
        torch.linalg.cholesky(T, upper=True, out=T)  # U with U^T U = G; the lower triangle of G is L
        P = torch.cholesky_inverse(T, upper=True, out=T).mT  # the whole of G^-1, symmetric
    except torch.linalg.LinAlgError:
        raise ConfigError(
            f"{setting}: G = X^T X + {reg_weight} I is not positive definite in {str(out.dtype)[6:]}; "
            f"raise {setting} or use dtype: float64"
        ) from None
    P /= -P.diagonal().clone()  # column j divided by -P_jj
    P.fill_diagonal_(0.0)  # P is B now
    return out


def binary(matrix):
    """0/1 CSR: a repeated interaction counts once."""
    matrix = matrix.tocsr()
    matrix.sum_duplicates()
    matrix.data[:] = 1
    return matrix.astype(np.float32)


def check_dtype(values, where):
    """dtype, the precision of a closed form (EASE's, UserEASE's): float32 or float64."""
    dtype = values.get("dtype", PROPERTIES["dtype"])
    if dtype not in DTYPES:
        raise ConfigError(f"{where('dtype')}: dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")


def check_positive(values, key, default, where):
    """A closed form's L2 penalty: with 0, X^T X (singular when an item or user is a sum of others) is inverted."""
    value = values.get(key, default)
    if value <= 0:  # config/keys.py checked that it is a number >= 0
        raise ConfigError(f"{where(key)}: {key} must be a number > 0 (the Gram's inverse needs it), got {value!r}")


def check_settings(values, where):
    """EASE's settings, checked before anything runs (from config.check_settings)."""
    check_dtype(values, where)
    check_positive(values, "reg_weight", PROPERTIES["reg_weight"], where)
    weights = values.get("side_weights") or {}
    if not isinstance(weights, dict):
        raise ConfigError(f"{where('side_weights')}: side_weights: expected {{field: weight}}, got {weights!r}")
    loaded = (values.get("load_col") or {}).get("item") or []
    for field, weight in weights.items():
        if not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError(
                f"{where('side_weights')}: side_weights: the weight of {field!r} must be a number >= 0, got {weight!r}"
            )
        if weight and field not in loaded:
            raise ConfigError(
                f"{where('side_weights')}: side_weights: item field {field!r} is not loaded; add it to load_col, "
                f"e.g. load_col: {{inter: [user_id, item_id, timestamp], item: [item_id, {field}]}}"
            )


def side_rows(dataset, weights):
    """w_f * A_f for every field f with w_f > 0: one pseudo-user row per value of the field."""
    rows = []
    for field, weight in weights.items():
        if weight == 0:
            continue
        if dataset.item_feat is None or field not in dataset.item_feat:
            raise ConfigError(f"side_weights: the data has no item field {field!r} (its side file is missing?)")
        if dataset.field2type[field] not in (FeatureType.TOKEN, FeatureType.TOKEN_SEQ):
            raise ConfigError(f"side_weights: item field {field!r} is not a token or token_seq field")
        values = dataset.item_feat[field].numpy().reshape(len(dataset.item_feat), -1)  # token_seq: 0-padded
        items = np.repeat(dataset.item_feat[dataset.iid_field].numpy(), values.shape[1])
        values = values.ravel()
        known = values > 0  # id 0: padding, or no value
        A = binary(
            sp.csr_matrix(
                (np.ones(known.sum()), (values[known], items[known])), shape=(dataset.num(field), dataset.item_num)
            )
        )
        rows.append(weight * A.astype(np.float64))  # exact weights for dtype: float64
    return rows


def gram(rows, out):
    """out = rows^T rows, for a dense tensor out on the CPU or a GPU; returns out."""
    if out.device.type == "cpu":
        sparse_gram(rows, out.numpy())
    else:
        dense_gram(rows, out)
    return out


def gram_workspace(n, device, itemsize):
    """Bytes gram() holds beside its n x n output: on the CPU each thread's block of rows, dense and as the
    sparse product (values and int32 indices); on a GPU one block of rows of X, densified."""
    if device.type == "cpu":
        return torch.get_num_threads() * -(-n // CPU_GRAM_BLOCKS) * n * (2 * itemsize + 4)
    return GPU_GRAM_BLOCK * n * itemsize


def sparse_gram(rows, out):
    """out = rows^T rows on the CPU, by sparse products: their work is the sum of squared
    row lengths, far below a dense product. Blocks of rows of the upper triangle run in
    threads (scipy releases the GIL); the lower triangle is their mirror."""
    n = rows.shape[1]
    items = rows.T.tocsr()
    step = -(-n // CPU_GRAM_BLOCKS)

    def upper(start):
        out[start : start + step, start:] = (items[start : start + step] @ rows[:, start:]).toarray()

    with ThreadPoolExecutor(torch.get_num_threads()) as pool:
        list(pool.map(upper, range(0, n, step)))
    for start in range(step, n, step):
        out[start : start + step, :start] = out[:start, start : start + step].T


def dense_gram(rows, out):
    """out = rows^T rows by dense products over blocks of rows: the fast way on a GPU."""
    out.zero_()
    for start in range(0, rows.shape[0], GPU_GRAM_BLOCK):
        block = dense_rows(rows[start : start + GPU_GRAM_BLOCK], out)
        out.addmm_(block.T, block)


def dense_rows(rows, like):
    """CSR rows as a dense tensor with the dtype and device of ``like``; only the nonzeros travel."""
    device = like.device
    counts = torch.from_numpy(np.diff(rows.indptr)).to(device)
    row = torch.repeat_interleave(torch.arange(rows.shape[0], device=device), counts)
    column = torch.from_numpy(rows.indices).to(device, torch.long)
    dense = torch.zeros(rows.shape, dtype=like.dtype, device=device)
    dense[row, column] = torch.from_numpy(rows.data).to(device, like.dtype)
    return dense
