"""The future-film filter (filter.future_items): what it puts last, in which lists, and its checks."""

import datetime

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_raw

from atomic_data import HoldoutRule, prepare
from recbole_ext import ConfigError
from recbole_ext.config.settings import load_settings
from recbole_ext.data.dataset import History, load_dataset
from recbole_ext.data.future import FutureItems
from recbole_ext.models.ease import EASE
from recbole_ext.quick_start.pipeline import run
from recbole_ext.trainer.predict import top_k
from recbole_ext.trainer.recbole_config import recbole_config
from run import main as run_cli

# the hand-made catalogue: release years from years.tsv; 23 has none, 24 and 25 only in their titles
YEARS = {item: 1995 if item <= 8 else 2000 if item <= 14 else 2005 if item <= 18 else 2006 for item in range(1, 23)}
TITLE_YEARS = {24: 1994, 25: 2006}
ITEMS = list(range(1, 26))
# the year of each interaction of users 1-4 (items: multiples of the user's step); user 4's last one,
# the one the holdout hides, is years after the others
HISTORIES = {1: [1996] * 4 + [1997] * 4, 2: [2001] * 4 + [2003] * 4, 3: [2008] * 4 + [2010] * 4}
HISTORIES[4] = [1996] * 4 + [1997] * 3 + [2001]
RULE = HoldoutRule(last=1, random=0, max_fraction=0.3, min_train=4, seed=1)


def unix(year, step):
    return int(datetime.datetime(year, 3, 1, tzinfo=datetime.UTC).timestamp()) + step * 3600


def year_of(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).year


def release_year(item):
    return YEARS.get(item, TITLE_YEARS.get(item))


def is_later(item, limit):
    """Whether the filter must put the item last for a user whose last active year + N is limit."""
    year = release_year(item)
    return year is not None and year > limit


@pytest.fixture(scope="module")
def hand_raw(tmp_path_factory):
    ratings = []
    for user, years in HISTORIES.items():
        seen = [item for item in ITEMS if item % (user + 1) == 0 or item == 25 - user][: len(years)]
        ratings += [(user, item, unix(year, step)) for step, (item, year) in enumerate(zip(seen, years))]
    # a crowd that watched at random in 2000: every item has co-watchers, and no two items tie in score
    rng = np.random.default_rng(0)
    for user in range(10, 20):
        ratings += [(user, int(item), unix(2000, step)) for step, item in enumerate(rng.choice(ITEMS, 12, False))]
    titles = [(item, f"Film {item}" + (f" ({TITLE_YEARS[item]})" if item in TITLE_YEARS else "")) for item in ITEMS]
    return write_raw(tmp_path_factory.mktemp("hand"), ratings, titles=titles, years=list(YEARS.items()))


@pytest.fixture(scope="module")
def fitted(hand_raw, tmp_path_factory):
    """EASE fitted on every interaction of the hand-made data, its dataset, history and interactions."""
    prepared = prepare(hand_raw, tmp_path_factory.mktemp("hand_prepared"), "hand", RULE)
    settings = load_settings("EASE", overrides=["state=ERROR", "reg_weight=5"])
    config = recbole_config(settings, prepared.data_path, prepared.name, tmp_path_factory.mktemp("checkpoints"))
    dataset = load_dataset(config)
    model = EASE(config, dataset)
    model.fit()
    inter = pd.read_csv(prepared.inter_path(prepared.name), sep="\t", names=["user", "item", "time"], header=0)
    return model, dataset, History.from_file(dataset, prepared.inter_path(prepared.name)), inter


def ranked(lists, user):
    return list(lists[lists.user == user].sort_values("rank").item)


def test_the_filter_puts_exactly_the_films_released_after_the_last_active_year_plus_n_last(fitted):
    model, dataset, history, inter = fitted
    users = dataset.token2id("user_id", [str(user) for user in HISTORIES])
    every = top_k(model, dataset, history, len(ITEMS) - 8, users=users)  # every unseen item, unfiltered
    for n in (0, 2, 5):
        lists = top_k(model, dataset, history, 6, users=users, future=FutureItems(dataset, n))
        for user in HISTORIES:
            limit = year_of(inter[inter.user == user].time.max()) + n
            order = ranked(every, user)
            kept = [item for item in order if not is_later(item, limit)]
            assert ranked(lists, user) == (kept + [item for item in order if item not in kept])[:6], (user, n)
    # the hand-made cases with N = 2: user 2 last rated in 2003, so 2005 (years.tsv) is kept and 2006 is
    # later, from years.tsv (19) or from the title (25); an item without a year (23) is kept
    mask = FutureItems(dataset, 2).mask(history, torch.tensor([dataset.token2id("user_id", "2")]))[0]
    assert mask[dataset.token2id("item_id", ["15", "19", "23", "25", "24"])].tolist() == [
        False,
        True,
        False,
        True,
        False,
    ]
    assert not mask[0]  # [PAD]


def test_a_user_keeps_a_full_list_when_fewer_than_k_films_pass_the_filter(fitted):
    model, dataset, history, inter = fitted
    user = [dataset.token2id("user_id", "1")]
    seen = set(inter[inter.user == 1].item)
    allowed = {item for item in ITEMS if item not in seen and not is_later(item, 1997)}  # last active 1997, N = 0
    k = len(allowed) + 3
    assert k <= len(ITEMS) - len(seen)  # that many unseen items remain
    lists = ranked(top_k(model, dataset, history, k, users=user, future=FutureItems(dataset, 0)), 1)
    order = ranked(top_k(model, dataset, history, len(ITEMS) - len(seen), users=user), 1)
    assert len(lists) == k and set(lists[: len(allowed)]) == allowed
    assert lists[len(allowed) :] == [item for item in order if item not in allowed][:3]  # the later films, best first


def test_scores_fall_along_a_filtered_list_so_a_score_blend_keeps_the_later_films_last(fitted):
    model, dataset, history, inter = fitted
    users = dataset.token2id("user_id", [str(user) for user in HISTORIES])
    plain = top_k(model, dataset, history, len(ITEMS), users=users)  # every unseen item, unfiltered
    lists = top_k(model, dataset, history, 12, users=users, future=FutureItems(dataset, 0))
    outranked = 0  # lists where a later film had scored above an allowed film before it
    for user in HISTORIES:
        scores = lists[lists.user == user].sort_values("rank").score.to_numpy()
        assert (np.diff(scores) <= 0).all(), user
        limit = year_of(inter[inter.user == user].time.max())
        items = ranked(lists, user)
        first_later = next((i for i, item in enumerate(items) if is_later(item, limit)), None)
        if first_later:  # the later films keep the model's order
            order = [item for item in ranked(plain, user) if is_later(item, limit)]
            assert items[first_later:] == order[: len(items) - first_later], user
            model_score = plain[plain.user == user].set_index("item").score
            outranked += model_score[items[first_later]] > model_score[items[first_later - 1]]
    assert outranked  # the hand-made data has the case the scores' shift is for


def test_validation_lists_and_the_submission_each_use_their_own_last_active_year(hand_raw, tmp_path):
    common = [f"data={hand_raw}", f"data_dir={tmp_path / 'data'}", "state=WARNING", "show_progress=false"]
    common += ["holdout.last=1", "holdout.random=0", "holdout.min_train=4", "holdout.max_fraction=0.3"]
    run(
        load_settings(
            "EASE",
            overrides=[*common, "reg_weight=5", "top_n=10", "filter.future_items=2", f"output_dir={tmp_path / 'run'}"],
        )
    )
    valid = pd.read_csv(tmp_path / "run" / "valid_top50.csv")
    full = pd.read_csv(tmp_path / "run" / "full_top50.csv")
    # user 4's training history ends in 1997 (limit 1999); with the held-out 2001 interaction, in 2001 (2003)
    for lists, limit in ((valid, 1999), (full, 2003)):
        items = list(lists[lists.user == 4].item)
        later = [is_later(item, limit) for item in items]
        assert later == sorted(later) and len(items) == 10  # later films only after every other
    assert any(release_year(item) == 2000 for item in full[full.user == 4].item)  # allowed in the submission
    submission = pd.read_csv(tmp_path / "run" / "submission.csv")
    assert not any(is_later(item, 2003) for item in submission[submission.user == 4].item)


@pytest.mark.parametrize(
    "override, message",
    [
        ("filter.future_items=-1", "command line: filter.future_items must be an integer >= 0 or ~ (off), got -1"),
        ("filter.future_items=2.5", "command line: filter.future_items must be an integer >= 0 or ~ (off), got 2.5"),
        ("filter.future_item=2", "command line: filter: unknown entry 'future_item'; did you mean 'future_items'?"),
        ("filter=2", "command line: filter: expected {future_items: N}, got 2"),
    ],
)
def test_bad_filter_settings_are_refused_in_one_line(override, message):
    with pytest.raises(ConfigError) as error:
        load_settings("SASRec", overrides=[override])
    assert str(error.value) == message


def test_the_filter_on_data_without_years_is_refused_before_anything_is_written(tmp_path, capsys):
    raw = write_raw(tmp_path / "raw", [(1, item, unix(2000, item)) for item in range(1, 20)], genres=[(1, "Drama")])
    args = ["--model=EASE", "--data", str(raw), f"data_dir={tmp_path / 'data'}", f"--output={tmp_path / 'out'}"]
    assert run_cli([*args, "filter.future_items=2"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: command line: filter.future_items needs the films' years: {raw} has no years.tsv or titles.tsv"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["raw"]
