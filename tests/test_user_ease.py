"""UserEASE: the user side and the hybrid against dense numpy, the checkpoint, the refusal of a Gram too large."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from recbole.data.interaction import Interaction
from test_ease import REG, reference_B, user_item_matrix

from atomic_data.synthetic import Scale, generate
from recbole_ext import ConfigError
from recbole_ext.config.settings import load_settings
from recbole_ext.data.dataset import load_dataset
from recbole_ext.models import ease, user_ease
from recbole_ext.quick_start.pipeline import predict_only, run
from recbole_ext.trainer.recbole_config import recbole_config

ROOT = Path(__file__).resolve().parent.parent
USER_REG = 60.0


def fitted(prepared, tmp_path, *overrides):
    settings = load_settings(
        "UserEASE", overrides=["state=WARNING", f"user_reg_weight={USER_REG}", f"item_reg_weight={REG}", *overrides]
    )
    config = recbole_config(settings, prepared.data_path, prepared.name, tmp_path / "checkpoints")
    dataset = load_dataset(config)
    model = user_ease.UserEASE(config, dataset)
    model.fit()
    return model, dataset


def user_side(X, reg):
    """The user-user closed form written out in numpy float64: C = EASE's B of X^T, scores C^T X."""
    return reference_B(X.T, reg).T @ X


@pytest.mark.parametrize("dtype, tolerance", [("float32", 2e-5), ("float64", 1e-11)])
def test_the_user_side_equals_the_dense_numpy_closed_form(tiny_prepared, tmp_path, dtype, tolerance):
    model, dataset = fitted(tiny_prepared, tmp_path, "item_weight=0", f"dtype={dtype}")
    X = user_item_matrix(dataset)
    expected = user_side(X, USER_REG)
    assert model.scores.dtype == getattr(torch, dtype)
    assert np.abs(model.scores.numpy() - expected).max() < tolerance
    assert np.abs(expected).max() > 0.1  # scores far from zero: the comparison means something


@pytest.mark.parametrize("weight", [0.3, 0.5, 1.0])
def test_the_hybrid_is_the_weighted_sum_of_the_item_and_the_user_side(tiny_prepared, tmp_path, weight):
    model, dataset = fitted(tiny_prepared, tmp_path, f"item_weight={weight}", "dtype=float64")
    X = user_item_matrix(dataset)
    expected = weight * (X @ reference_B(X, REG)) + (1 - weight) * user_side(X, USER_REG)
    assert np.abs(model.scores.numpy() - expected).max() < 1e-11
    if weight == 1.0:  # the item side alone is movierec's EASE
        settings = load_settings("EASE", overrides=["state=WARNING", f"reg_weight={REG}", "dtype=float64"])
        plain = ease.EASE(recbole_config(settings, tiny_prepared.data_path, tiny_prepared.name, tmp_path), dataset)
        plain.fit()
        users = Interaction({dataset.uid_field: torch.arange(1, dataset.user_num)})
        assert torch.allclose(model.full_sort_predict(users), plain.full_sort_predict(users), atol=1e-12)


def test_scores_for_all_items_and_for_pairs_come_from_the_score_matrix(tiny_prepared, tmp_path):
    model, dataset = fitted(tiny_prepared, tmp_path)
    users, items = torch.tensor([1, 5, 17]), torch.tensor([3, 40, 99])
    scores = model.full_sort_predict(Interaction({dataset.uid_field: users})).view(len(users), -1)
    assert torch.equal(scores, model.scores[users])
    pairs = model.predict(Interaction({dataset.uid_field: users, dataset.iid_field: items}))
    assert torch.equal(pairs, scores[torch.arange(3), items])
    assert list(model.state_dict()) == ["scores"]  # the checkpoint holds the scores, not the users x users C


def test_user_ease_runs_and_predict_only_gives_the_same_submission(tiny_raw, tmp_path):
    common = [f"data={tiny_raw}", f"data_dir={tmp_path / 'data'}", "show_progress=false", "state=WARNING"]
    common += ["holdout.min_train=8", "holdout.random=3", f"user_reg_weight={USER_REG}", f"item_reg_weight={REG}"]
    summary = run(load_settings("UserEASE", overrides=[*common, f"output_dir={tmp_path / 'run'}"]))
    assert summary["holdout"]["recall@10"] > 0 and summary["epochs_run"] == 1
    again = predict_only(tmp_path / "run" / "model.pth", tmp_path / "again", "cpu")
    assert pd.read_csv(again / "submission.csv").equals(pd.read_csv(tmp_path / "run" / "submission.csv"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("item_weight=1.5", "command line: item_weight must be a number in [0, 1], got 1.5"),
        ("item_weight=-0.5", "command line: item_weight must be a number >= 0, got -0.5"),
        ("user_reg_weight=abc", "command line: user_reg_weight must be a number >= 0, got 'abc'"),
        ("dtype=float16", "command line: dtype: expected one of float32, float64, got 'float16'"),
    ],
)
def test_bad_user_ease_settings_are_refused_in_one_line(override, message):
    with pytest.raises(ConfigError) as error:
        load_settings("UserEASE", overrides=[override])
    assert str(error.value) == message


@pytest.fixture(scope="module")
def many_users_raw(tmp_path_factory):
    """16,000 users: a user Gram of 1.9 GiB in float64."""
    folder = tmp_path_factory.mktemp("many_users")
    generate(folder, Scale(users=16_000, items=60, median=12, min_count=10, max_count=20), seed=1)
    return folder


# a run of run.py whose address space may grow 1 GiB beyond what it holds once imported (ulimit -v)
LIMITED_RUN = """
import resource, sys
from pathlib import Path
import run
size = int(Path("/proc/self/status").read_text().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, resource.RLIM_INFINITY))
sys.exit(run.main(sys.argv[1:]))
"""


def test_a_user_gram_too_large_for_the_memory_is_refused_before_any_work(many_users_raw, tmp_path):
    args = ["--model=UserEASE", "--data", str(many_users_raw), "--device=cpu", "dtype=float64"]
    args += [f"data_dir={tmp_path / 'data'}", f"--output={tmp_path / 'run'}"]
    done = subprocess.run([sys.executable, "-c", LIMITED_RUN, *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    *_, line = done.stderr.strip().splitlines()  # after the log lines
    refusal = re.fullmatch(
        r"error: UserEASE: the fit needs ([\d.]+) GiB in float64 \(the user-user Gram of 16,000 users is 1\.9 GiB\), "
        r"but the cpu has ([\d.]+) GiB available; use EASE \(the item side alone\) or a device with more memory",
        line,
    )
    assert refusal and float(refusal[2]) < 1 < 1.9 < float(refusal[1]), line
    assert not list(tmp_path.glob("*run*"))  # no output, no .failed folder, no staging left
    assert not list(tmp_path.glob("data/prepared/*/cache/*"))  # refused before the dataset was built
