import gc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from recbole_ext.config.settings import load_settings
from recbole_ext.data.dataset import History, load_dataset
from recbole_ext.patches import registry
from recbole_ext.trainer.predict import peak_memory, top_k
from recbole_ext.trainer.recbole_config import recbole_config


def model_and_data(prepared, tmp_path, model, *overrides):
    settings = load_settings(model, overrides=["state=ERROR", *overrides])
    config = recbole_config(settings, prepared.data_path, prepared.valid_name, tmp_path)
    init_seed(config["seed"], True)
    dataset = load_dataset(config)
    history = History.from_file(dataset, prepared.data_path / prepared.valid_name / f"{prepared.valid_name}.inter")
    return registry.get_model(model)(config, dataset), dataset, history


def user_sequence(prepared, user):
    inter = pd.read_csv(prepared.data_path / prepared.valid_name / f"{prepared.valid_name}.inter", sep="\t")
    inter.columns = ["user", "item", "time"]
    return inter[inter.user == user].sort_values("time", kind="stable")


def reference_top10(model, dataset, items, seen):
    """Scores from an explicit item sequence, written out without movierec's code."""
    ids = dataset.token2id("item_id", [str(i) for i in items])[-model.max_seq_length :]
    padded = torch.zeros(1, model.max_seq_length, dtype=torch.long)
    padded[0, : len(ids)] = torch.as_tensor(ids)
    interaction = Interaction({"item_id_list": padded, "item_length": torch.tensor([len(ids)])})
    with torch.no_grad():
        scores = model.full_sort_predict(interaction).view(-1).clone()
    scores[0] = -np.inf
    scores[torch.as_tensor(dataset.token2id("item_id", [str(i) for i in seen]))] = -np.inf
    return [int(t) for t in dataset.id2token("item_id", torch.topk(scores, 10).indices.numpy())]


def test_sequential_model_is_scored_from_the_whole_training_sequence(tiny_prepared, tmp_path):
    model, dataset, history = model_and_data(
        tiny_prepared, tmp_path, "SASRec", "MAX_ITEM_LIST_LENGTH=12", "hidden_size=16", "inner_size=32"
    )
    model.eval()
    holdout = pd.read_csv(tiny_prepared.holdout_path)
    # a user whose hidden items include one from the middle of the history
    middle = holdout[holdout.part == "random"].merge(
        holdout[holdout.part == "last"].groupby("user").time.min().rename("last_time"), on="user"
    )
    user, hidden_time = next(
        (u, t)
        for u, t in zip(middle.user, middle.time)
        if (user_sequence(tiny_prepared, u).time > t).sum() >= 3  # training items after the hidden one
    )
    sequence = user_sequence(tiny_prepared, user)
    uid = torch.as_tensor(dataset.token2id("user_id", [str(user)]))
    ours = top_k(model, dataset, history, 10, users=uid)
    whole = reference_top10(model, dataset, sequence.item.tolist(), sequence.item.tolist())
    assert ours.sort_values("rank").item.tolist() == whole
    # RecBole's native evaluation would score the prefix that ends before the hidden item
    prefix = sequence[sequence.time < hidden_time].item.tolist()
    assert reference_top10(model, dataset, prefix, sequence.item.tolist()) != whole


def test_top_k_masks_seen_items_and_padding_in_any_batch_size(tiny_prepared, tmp_path):
    model, dataset, history = model_and_data(tiny_prepared, tmp_path, "BPR", "embedding_size=8")
    one_batch = top_k(model, dataset, history, 20, batch_users=10_000)
    small_batches = top_k(model, dataset, history, 20, batch_users=7)
    pd.testing.assert_frame_equal(one_batch, small_batches)
    inter = pd.read_csv(tiny_prepared.data_path / "tiny-val" / "tiny-val.inter", sep="\t")
    inter.columns = ["user", "item", "time"]
    assert one_batch.merge(inter, on=["user", "item"]).empty
    assert (one_batch.item > 0).all()  # [PAD] (-1) never recommended
    assert set(one_batch.user) == set(inter.user)
    assert one_batch.groupby("user").size().eq(20).all()
    # ranks follow scores
    assert (one_batch.groupby("user").score.diff().dropna() <= 0).all()


def test_nan_scores_are_an_error(tiny_prepared, tmp_path):
    from recbole_ext.trainer.predict import ModelScoresNaN

    model, dataset, history = model_and_data(tiny_prepared, tmp_path, "BPR", "embedding_size=8")
    with torch.no_grad():
        model.item_embedding.weight[3] = float("nan")
    with pytest.raises(ModelScoresNaN):
        top_k(model, dataset, history, 10)


def test_peak_memory_counts_the_torch_tensors_held_at_once():
    n = 1 << 20  # floats: 4 MiB

    def allocate():
        a = torch.ones(n)
        b = torch.ones(2 * n)  # a and b: 12 MiB
        del a
        c = torch.ones(n)  # b and c: 12 MiB
        return b.sum() + c.sum()

    result, peak = peak_memory(allocate)
    assert result == 3 * n
    assert 12 * 2**20 <= peak < 13 * 2**20


def test_peak_memory_prints_nothing(capfd):
    peak_memory(lambda: torch.ones(10))  # it runs once per batch of users: no profiler log lines
    assert capfd.readouterr() == ("", "")


def resident_growth(function):
    """function() and how far the process's resident memory peaked above its size before, in bytes.

    What the kernel counts (and the OOM killer acts on): /proc/self/clear_refs
    resets the peak (VmHWM) to the current resident size.
    """

    def status(key):
        line = next(row for row in Path("/proc/self/status").read_text().splitlines() if row.startswith(key + ":"))
        return int(line.split()[1]) * 1024

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS")
    result = function()
    return result, status("VmHWM") - before


def test_pair_scoring_keeps_to_the_memory_budget(tiny_prepared, tmp_path):
    # ConvNCF has no full_sort_predict; one pair costs ~100 KB of feature maps
    model, dataset, history = model_and_data(tiny_prepared, tmp_path, "ConvNCF")
    users = history.users()[:12]  # 12 x 150 pairs: ~180 MB scored at once
    budget = 32 * 2**20
    small_chunks = top_k(model, dataset, history, 10, users=users, memory_budget=budget // 8)
    scored, growth = resident_growth(lambda: top_k(model, dataset, history, 10, users=users, memory_budget=budget))
    assert growth < 2 * budget
    # chunks end inside a user's items or not: the same lists
    pd.testing.assert_frame_equal(scored, small_chunks, check_exact=False, rtol=1e-5)
