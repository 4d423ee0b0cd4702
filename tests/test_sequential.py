"""Whole-sequence training of movierec's SASRec and BERT4Rec: the windows, the losses, the encoders, prediction."""

import math
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_raw
from recbole.data.interaction import Interaction

from recbole_ext import ConfigError
from recbole_ext.config.settings import load_settings
from recbole_ext.data.dataset import History, SequenceWindows, load_dataset, train_loader
from recbole_ext.models.losses import gbce, softmax_cross_entropy
from recbole_ext.patches import registry
from recbole_ext.quick_start.pipeline import run
from recbole_ext.trainer.recbole_config import recbole_config

L = 7


def built(prepared, tmp_path, model, *overrides):
    settings = load_settings(
        model,
        overrides=[
            f"MAX_ITEM_LIST_LENGTH={L}",
            "hidden_size=16",
            "inner_size=32",
            "n_layers=1",
            "state=ERROR",
            *overrides,
        ],
    )
    config = recbole_config(settings, prepared.data_path, prepared.valid_name, tmp_path)
    dataset = load_dataset(config)
    history = History.from_file(dataset, prepared.inter_path(prepared.valid_name))
    return config, dataset, train_loader(config, dataset, history)


def training_sequences(prepared):
    inter = pd.read_csv(prepared.inter_path(prepared.valid_name), sep="\t")
    inter.columns = ["user", "item", "time"]
    inter = inter.sort_values(["user", "time"], kind="stable")
    return {user: group.item.tolist() for user, group in inter.groupby("user")}


def windows_of_an_epoch(loader, dataset):
    """(user, [items]) of every window of one epoch, in original ids."""
    result = []
    for batch in loader:
        items, lengths = batch["item_id_list"], batch["item_length"]
        assert items.shape[1] == loader.width
        for row in range(len(items)):
            assert (items[row, lengths[row] :] == 0).all()  # left-aligned, 0-padded
            user = int(dataset.id2token("user_id", batch["user_id"][row]))
            tokens = np.atleast_1d(dataset.id2token("item_id", items[row, : lengths[row]]))  # a 1-item window too
            result.append((user, [int(t) for t in tokens]))
    return result


def assert_contiguous(window, sequence):
    start = sequence.index(window[0])
    assert window == sequence[start : start + len(window)]


def test_a_next_item_epoch_targets_each_training_interaction_but_a_users_first_exactly_once(tiny_prepared, tmp_path):
    _, dataset, loader = built(tiny_prepared, tmp_path, "SASRec", "train_windows=all", "train_batch_size=32")
    assert isinstance(loader, SequenceWindows) and loader.width == L + 1
    sequences = training_sequences(tiny_prepared)
    targets = Counter()
    windows_per_user = Counter()
    for user, window in windows_of_an_epoch(loader, dataset):
        assert_contiguous(window, sequences[user])
        targets.update((user, item) for item in window[1:])  # position t's target is the item at t + 1
        windows_per_user[user] += 1
    expected = {(user, item) for user, items in sequences.items() for item in items[1:]}
    assert set(targets) == expected and set(targets.values()) == {1}
    holdout = pd.read_csv(tiny_prepared.holdout_path)
    assert not set(zip(holdout.user, holdout.item)) & set(targets)
    assert max(windows_per_user.values()) >= 3  # long users give several windows


def test_a_masked_epoch_holds_each_training_interaction_in_one_window(tiny_prepared, tmp_path):
    _, dataset, loader = built(tiny_prepared, tmp_path, "BERT4Rec", "train_windows=all", "train_batch_size=32")
    assert loader.width == L
    sequences = training_sequences(tiny_prepared)
    seen = Counter()
    for user, window in windows_of_an_epoch(loader, dataset):
        assert_contiguous(window, sequences[user])
        seen.update((user, item) for item in window)
    assert set(seen) == {(u, i) for u, items in sequences.items() for i in items} and set(seen.values()) == {1}


def test_random_windows_take_one_window_per_user_and_epoch(tiny_prepared, tmp_path):
    _, dataset, loader = built(tiny_prepared, tmp_path, "SASRec", "train_windows=random", "train_batch_size=32")
    sequences = training_sequences(tiny_prepared)
    drawn = {}
    for _ in range(5):
        epoch = windows_of_an_epoch(loader, dataset)
        assert sorted(user for user, _ in epoch) == sorted(sequences)
        for user, window in epoch:
            assert_contiguous(window, sequences[user])
            drawn.setdefault(user, set()).add(tuple(window))
    assert max(len(windows) for windows in drawn.values()) > 1  # another window in another epoch


def test_sasrec_output_at_a_position_ignores_later_items(tiny_prepared, tmp_path):
    config, dataset, _ = built(tiny_prepared, tmp_path, "SASRec")
    model = registry.get_model("SASRec")(config, dataset).eval()
    sequence = torch.tensor([[5, 9, 2, 7, 3, 0, 0]])
    changed = sequence.clone()
    changed[0, 3] = 11
    with torch.no_grad():
        before, after = model.encode(sequence), model.encode(changed)
    assert torch.allclose(before[0, :3], after[0, :3], atol=1e-6)
    assert not torch.allclose(before[0, 3], after[0, 3])


@pytest.mark.parametrize("model", ["SASRec", "BERT4Rec"])
def test_xavier_embedding_init_gives_the_item_and_position_tables_xaviers_spread(model, tiny_prepared, tmp_path):
    spread = {}
    for init in ("normal", "xavier"):
        config, dataset, _ = built(tiny_prepared, tmp_path, model, f"embedding_init={init}")
        net = registry.get_model(model)(config, dataset)
        tables = {name: getattr(net, name).weight for name in ("item_embedding", "position_embedding")}
        spread[init] = {name: weight.std().item() for name, weight in tables.items()}
    for name, weight in tables.items():
        assert spread["normal"][name] == pytest.approx(config["initializer_range"], rel=0.2)  # RecBole's
        assert spread["xavier"][name] == pytest.approx(math.sqrt(2 / sum(weight.shape)), rel=0.2), name


def test_sasrec_predicts_from_the_latest_position(tiny_prepared, tmp_path):
    config, dataset, _ = built(tiny_prepared, tmp_path, "SASRec")
    model = registry.get_model("SASRec")(config, dataset).eval()
    sequences = torch.tensor([[5, 9, 2, 0, 0, 0, 0], [4, 8, 6, 1, 3, 12, 10]])
    lengths = torch.tensor([3, 7])
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({"item_id_list": sequences, "item_length": lengths}))
        hidden = model.encode(sequences)
    embedding = model.item_embedding.weight
    assert torch.allclose(scores[0], hidden[0, 2] @ embedding.T, atol=1e-5)
    assert torch.allclose(scores[1], hidden[1, 6] @ embedding.T, atol=1e-5)
    assert not torch.allclose(scores[0], hidden[0, 1] @ embedding.T, atol=1e-3)


def test_bert4rec_predicts_from_a_mask_after_the_latest_items(tiny_prepared, tmp_path):
    config, dataset, _ = built(tiny_prepared, tmp_path, "BERT4Rec")
    model = registry.get_model("BERT4Rec")(config, dataset).eval()
    mask = model.mask_token
    sequences = torch.tensor([[5, 9, 2, 0, 0, 0, 0], [4, 8, 6, 1, 3, 12, 10]])
    lengths = torch.tensor([3, 7])
    inputs, positions = model.reconstruct_test_data(sequences, lengths)
    assert inputs.tolist() == [[5, 9, 2, mask, 0, 0, 0], [8, 6, 1, 3, 12, 10, mask]]
    assert positions.tolist() == [3, 6]
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({"item_id_list": sequences, "item_length": lengths}))
        hidden = model.forward(inputs)
    expected = hidden[torch.arange(2), positions] @ model.item_embedding.weight[: model.n_items].T + model.output_bias
    assert torch.allclose(scores, expected, atol=1e-5)


def test_bert4rec_masks_real_positions_and_at_least_one_per_window(tiny_prepared, tmp_path):
    config, dataset, _ = built(tiny_prepared, tmp_path, "BERT4Rec", "mask_ratio=0.3")
    model = registry.get_model("BERT4Rec")(config, dataset)
    lengths = torch.cat([torch.randint(1, L + 1, (2000,)), torch.full((4000,), L)])
    sequences = torch.where(torch.arange(L) < lengths.unsqueeze(1), 1, 0)
    last = torch.arange(L) == (lengths - 1).unsqueeze(1)
    full = lengths == L
    torch.manual_seed(0)
    for ft_ratio in (0.0, 0.25, 1.0):
        model.ft_ratio = ft_ratio
        masked = model.training_mask(sequences, lengths)
        assert not (masked & (sequences == 0)).any() and masked.any(1).all()
        only_last = (masked == last).all(1)
        # a window masks its last item only with probability ft_ratio (fine-tuning samples), or when none of
        # its items was drawn (0.7^L), or when the last was the only one drawn (0.3 * 0.7^(L-1))
        expected = ft_ratio + (1 - ft_ratio) * (0.7**L + 0.3 * 0.7 ** (L - 1))
        assert only_last[full].float().mean().item() == pytest.approx(expected, abs=0.025)
        if ft_ratio == 0.0:  # each real item drawn with mask_ratio, plus the last one where none was
            per_window = masked[full].sum(1).float().mean().item()
            assert per_window == pytest.approx(L * 0.3 + 0.7**L, abs=0.1)


def test_gbce_equals_the_formula_written_out():
    embedding = torch.tensor([[0.0, 0.0], [1.0, 0.5], [-0.5, 1.0], [0.3, -0.2], [2.0, 0.1]])  # row 0: padding
    hidden = torch.tensor([[[0.4, -1.0], [1.5, 0.2], [9.0, 9.0]], [[-0.3, 0.8], [0.0, 0.0], [0.0, 0.0]]])
    targets = torch.tensor([[2, 4, 0], [1, 0, 0]])  # 0: no target at that position
    k = 2
    torch.manual_seed(3)
    negatives = torch.randint(1, 5, (2, k)).tolist()  # the loss draws its negatives the same way, per window

    def log_sigmoid(x):
        return -math.log1p(math.exp(-x))

    def by_hand(beta):
        offset = -math.log(k)  # where BCE's positive pull and its k negatives' push balance
        losses = []
        for window in range(2):
            for h, y in zip(hidden[window].tolist(), targets[window].tolist()):
                if y == 0:
                    continue
                loss = -beta * log_sigmoid(sum(a * b for a, b in zip(h, embedding[y].tolist())) + offset)
                for n in negatives[window]:
                    score = sum(a * b for a, b in zip(h, embedding[n].tolist())) + offset
                    loss -= math.log(1 - math.exp(log_sigmoid(score)))
                losses.append(loss)
        return sum(losses) / len(losses)

    # |I| = 4 items, alpha = k / (|I| - 1) = 2/3; beta = alpha (t (1 - 1/alpha) + 1/alpha)
    for t, beta in ((0.5, 5 / 6), (0.0, 1.0), (1.0, 2 / 3)):
        torch.manual_seed(3)
        assert gbce(hidden, targets, embedding, k, t).item() == pytest.approx(by_hand(beta), rel=1e-5), t


def test_chunked_cross_entropy_equals_the_plain_one_in_value_and_gradient():
    torch.manual_seed(0)
    embedding = torch.randn(50, 8, requires_grad=True)
    bias = torch.randn(50, requires_grad=True)
    hidden = torch.randn(37, 8, requires_grad=True)
    targets = torch.randint(1, 50, (37,))
    plain = torch.nn.functional.cross_entropy(hidden @ embedding[1:].T + bias[1:], targets - 1)
    plain_grads = torch.autograd.grad(plain, (embedding, bias, hidden))
    for max_logits in (10**6, 49 * 5, 49):  # one chunk, chunks of 5 rows, of 1 row
        loss = softmax_cross_entropy(hidden, targets, embedding, bias, max_logits=max_logits)
        grads = torch.autograd.grad(loss, (embedding, bias, hidden))
        assert loss.item() == pytest.approx(plain.item(), rel=1e-6)
        for ours, theirs in zip(grads, plain_grads):
            assert torch.allclose(ours, theirs, atol=1e-6)


def test_chunked_cross_entropy_multiplies_no_more_than_the_plain_one():
    # the chunks bound the memory, not by recomputing their logits in the backward pass (a fourth product)
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    embedding = torch.randn(50, 8, requires_grad=True)
    hidden = torch.randn(37, 8, requires_grad=True)
    targets = torch.randint(1, 50, (37,))

    def flops(loss, *args, **kwargs):
        with FlopCounterMode(display=False) as counter:
            loss(*args, **kwargs).backward()
        return counter.get_total_flops()

    def plain_loss(hidden, targets, embedding):
        return torch.nn.functional.cross_entropy(hidden @ embedding[1:].T, targets - 1)

    plain = flops(plain_loss, hidden, targets, embedding)
    for max_logits in (10**6, 49 * 5, 49):
        assert flops(softmax_cross_entropy, hidden, targets, embedding, max_logits=max_logits) == plain


@pytest.fixture(scope="module")
def cycle_raw(tmp_path_factory):
    """Every user walks the same cycle of 60 items from another start: the next item is always known."""
    ratings = []
    for user in range(1, 61):
        start = (user * 7) % 60
        ratings += [(user, 1 + (start + step) % 60, 1_000_000 + 100 * step) for step in range(24)]
    return write_raw(tmp_path_factory.mktemp("cycle"), ratings)


@pytest.mark.parametrize(
    "model, settings",
    [
        ("SASRec", ["loss_type=CE"]),
        ("SASRec", ["loss_type=gBCE", "neg_samples=16", "gbce_t=0.75"]),
        ("SASRec", ["loss_type=BPR"]),
        ("SASRec", ["loss_type=CE", "amp=bf16"]),  # mixed precision learns too
        ("BERT4Rec", ["loss_type=CE", "mask_ratio=0.3", "ft_ratio=0.2", "learning_rate=0.005", "epochs=40"]),
    ],
)
def test_whole_sequence_models_learn_the_next_item(model, settings, cycle_raw, tmp_path):
    summary = run(
        load_settings(
            model,
            overrides=[
                f"data={cycle_raw}",
                f"data_dir={tmp_path / 'data'}",
                f"output_dir={tmp_path / 'run'}",
                "holdout.last=1",
                "holdout.random=0",
                "holdout.min_train=10",
                "MAX_ITEM_LIST_LENGTH=10",
                "hidden_size=32",
                "inner_size=64",
                "n_layers=1",
                "n_heads=1",
                "hidden_dropout_prob=0.1",
                "attn_dropout_prob=0.1",
                "train_batch_size=16",
                "learning_rate=0.01",
                "epochs=25",
                "stopping_step=40",
                "min_epoch_steps=1",  # 25 passes over the windows: what the cycle needs
                "show_progress=false",
                "state=WARNING",
                *settings,
            ],
        ),
        validate_only=True,
    )
    # the hidden item is the next one on the cycle; popularity would find it 10 times in 60
    assert summary["holdout"]["recall@10"] >= 0.9


@pytest.mark.parametrize(
    "model, setting, message",
    [
        ("SASRec", "loss_type=softmax", "loss_type must be one of CE, gBCE, BPR, got 'softmax'"),
        ("SASRec", "gbce_t=1.5", "gbce_t must be a number in [0, 1], got 1.5"),
        ("SASRec", "neg_samples=0", "neg_samples must be an integer >= 1, got 0"),
        ("SASRec", "train_windows=last", "train_windows must be one of all, random, got 'last'"),
        ("BERT4Rec", "embedding_init=kaiming", "embedding_init must be one of normal, xavier, got 'kaiming'"),
        ("BERT4Rec", "ft_ratio=1.5", "ft_ratio must be a number in [0, 1], got 1.5"),
        ("BERT4Rec", "loss_type=BCE", "loss_type must be one of CE, gBCE, BPR, got 'BCE'"),
        ("SASRec", "amp=fp32", "amp must be off, fp16 or bf16, got 'fp32'"),
        ("BERT4Rec", "enable_amp=true", "enable_amp: movierec's window-trained models take amp: fp16 | bf16 instead"),
    ],
)
def test_bad_whole_sequence_settings_are_refused_in_one_line(model, setting, message):
    with pytest.raises(ConfigError, match=f"^command line: {re.escape(message)}$"):
        load_settings(model, overrides=[setting])
