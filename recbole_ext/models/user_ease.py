r"""UserEASE: EASE on the users' side, and the competition's "hybrid EASE" of both sides.

X is the user-item matrix (users x items, 1 = seen). The user side is EASE
of X^T: a user's row is reconstructed from the other users' rows,

    G_U = X X^T + lambda_U I             (users x users), lambda_U = user_reg_weight
    C = EASE's closed form of G_U        C_vu = -P_vu / P_uu, C_uu = 0, P = G_U^{-1}
    S_user = C^T X                       score(u, i) = sum_v C_vu X_vi

and the hybrid adds the item side, EASE's B with lambda_I = item_reg_weight,
with weight w = item_weight:

    S = w X B + (1 - w) S_user           w = 0: the user side alone; w = 1: EASE

The competition's best private blend held this hybrid with lambda_I = 660
and lambda_U = 4573 on the full data; its write-up gives no weights (w = 0.5
here, searchable). Like every user-side model it scores the users of its
training matrix only. Its state is S (users x items), computed once in
``fit``: C (users x users) is 4.6x larger at competition scale.

Memory: the fit holds the user Gram (users^2 numbers: 3.9 GB in float32 for
31,360 users) next to S (0.85 GB); the constructor refuses, before any work,
when that exceeds the memory available on the device (``check_memory``), and so does
``check_data`` on the prepared data's counts before the dataset is built.
"""

import resource
from pathlib import Path

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType, ModelType

from recbole_ext import ConfigError
from recbole_ext.models.ease import (
    EASETrainer,
    binary,
    check_dtype,
    check_positive,
    closed_form,
    dense_rows,
    gram_workspace,
)

PROPERTIES = {
    "user_reg_weight": 4573.0,  # lambda_U, the L2 penalty of the user side (the winners' value on the full data)
    "item_reg_weight": 660.0,  # lambda_I, EASE's reg_weight for the item side of the hybrid
    "item_weight": 0.5,  # w, the item side's share of the scores: 0 = the user side alone, 1 = plain EASE
    "dtype": "float32",  # float32 | float64: precision of both closed forms and of the scores
    "train_neg_sample_args": None,  # the closed form never reads training batches: no sampler to build
}
BLOCK_USERS = 1024  # rows of X densified at a time when the scores are computed
UserEASETrainer = EASETrainer


class UserEASE(GeneralRecommender):
    input_type = InputType.POINTWISE
    type = ModelType.TRADITIONAL

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.dtype = config["dtype"]
        self.user_reg_weight, self.item_reg_weight = float(config["user_reg_weight"]), float(config["item_reg_weight"])
        self.item_weight = float(config["item_weight"])
        self.interactions = binary(dataset.inter_matrix(form="csr"))  # an input, rebuilt from the dataset
        check_memory(self.n_users - 1, self.n_items - 1, self.dtype, self.item_weight, self.device)
        self.register_buffer("scores", torch.zeros(self.n_users, self.n_items, dtype=getattr(torch, self.dtype)))

    def fit(self):
        """S, on the model's device: the item side's closed form (if w > 0), then the user side's (if w < 1)."""
        X, w, n_users = self.interactions.astype(self.dtype), self.item_weight, self.n_users
        like = {"dtype": self.scores.dtype, "device": self.scores.device}
        blocks = [slice(start, start + BLOCK_USERS) for start in range(0, n_users, BLOCK_USERS)]
        if w > 0:
            B = closed_form(X, self.item_reg_weight, torch.empty(self.n_items, self.n_items, **like), "item_reg_weight")
            for block in blocks:
                torch.mm(dense_rows(X[block], B), B, out=self.scores[block])
            self.scores *= w
            del B
        if w < 1:
            C = closed_form(X.T.tocsr(), self.user_reg_weight, torch.empty(n_users, n_users, **like), "user_reg_weight")
            for block in blocks:  # S_user = C^T X = sum over blocks of users v of C[v]^T X[v]
                self.scores.addmm_(C[block].T, dense_rows(X[block], C), alpha=1 - w)

    def full_sort_predict(self, interaction):
        return self.scores[interaction[self.USER_ID]].view(-1)

    def predict(self, interaction):
        return self.scores[interaction[self.USER_ID], interaction[self.ITEM_ID]]


def memory_needed(users, items, dtype, item_weight, device):
    """Bytes the fit holds at its peak: the scores (users x items), and the larger of the user Gram
    (users^2) and, for the hybrid, B (items^2), with what computing it holds beside it (RecBole's
    padding user and item 0 counted)."""
    itemsize, users, items = getattr(torch, dtype).itemsize, users + 1, items + 1
    sides = [n for n, used in ((items, item_weight > 0), (users, item_weight < 1)) if used]
    gram = max(itemsize * n**2 + gram_workspace(n, device, itemsize) for n in sides)
    return itemsize * users * items + gram


def check_memory(users, items, dtype, item_weight, device):
    """Refuses a fit that does not fit in the memory available on device: run on the prepared data's counts
    before its dataset is built (check_data), and by the model itself."""
    device = torch.device(device)
    needed, available = memory_needed(users, items, dtype, item_weight, device), available_memory(device)
    if available is not None and needed > available:
        gram = (users + 1) ** 2 * getattr(torch, dtype).itemsize
        raise ConfigError(
            f"UserEASE: the fit needs {needed / 2**30:.1f} GiB in {dtype} (the user-user Gram of "
            f"{users:,} users is {gram / 2**30:.1f} GiB), but the {device.type} has "
            f"{available / 2**30:.1f} GiB available; use EASE (the item side alone) or a device with more memory"
        )


def check_data(values, counts, device):
    """UserEASE on the prepared data (its counts), checked before the dataset is built."""
    weight = values.get("item_weight", PROPERTIES["item_weight"])
    check_memory(counts["users"], counts["items"], values.get("dtype", PROPERTIES["dtype"]), weight, device)


def check_settings(values, where):
    """UserEASE's settings, checked before anything runs (from config.check_settings)."""
    check_dtype(values, where)
    for key in ("user_reg_weight", "item_reg_weight"):
        check_positive(values, key, PROPERTIES[key], where)
    weight = values.get("item_weight", PROPERTIES["item_weight"])
    if not 0 <= weight <= 1:  # config/keys.py checked that it is a number >= 0
        raise ConfigError(f"{where('item_weight')}: item_weight must be a number in [0, 1], got {weight!r}")


def available_memory(device):
    """Bytes free on device, or None where unknown: CUDA's free memory; on the CPU the kernel's
    MemAvailable, within the process's address-space limit (ulimit -v) when it has one."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():  # not Linux
        return None
    fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines())
    available = int(fields["MemAvailable"].split()[0]) * 1024
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        available = min(available, limit - int(status["VmSize"].split()[0]) * 1024)
    return available
