"""The learned second stage (blend method stack) on hand-made lists whose right answer is known."""

import numpy as np
import pandas as pd
import pytest
from test_ensemble import write_data, write_run

from recbole_ext.blend import stack, stack_features
from recbole_ext.blend.ensemble import build
from recbole_ext.blend.fusion import evaluate as simple_blend
from recbole_ext.blend.recipe import read_recipe
from recbole_ext.ensemble import main
from recbole_ext.evaluator.metrics import RECALL

USERS, ITEMS, TRAIN_ITEMS = 200, 400, 20


def last_item_case(seed=0):
    """Member A (a static model) holds each user's three random hidden items somewhere in its top 10, its scores
    falling evenly; member B (a sequential one) is right on its top item only, the user's last item, and its
    scores are flat after it, so that no weighting of scaled scores takes B's top item without B's noise.
    Returns (hidden {user: items}, lists A and B as {user: items best first}, scores of B, interactions)."""
    rng = np.random.default_rng(seed)
    hidden, a_lists, b_lists, interactions = {}, {}, {}, []
    for user in range(1, USERS + 1):
        items = rng.permutation(np.arange(1, ITEMS + 1)).tolist()
        train, last, random_items, rest = items[:TRAIN_ITEMS], items[20], items[21:24], items[24:]
        interactions += [(user, item) for item in train + random_items + [last]]
        hidden[user] = {last, *random_items}
        a_top = rest[:7]
        for position, item in zip(sorted(rng.choice(10, 3, replace=False)), random_items):
            a_top.insert(position, item)
        a_lists[user] = a_top + rest[7:47]
        b_lists[user] = [last] + rest[47:96]
    b_scores = {user: [1.0] + [0.9999 - 1e-6 * r for r in range(48)] + [0.0] for user in b_lists}
    return hidden, a_lists, b_lists, b_scores, interactions


def frame(lists, scores=None):
    rows = [
        (user, item, scores[user][rank] if scores else float(len(items) - rank), rank)
        for user, items in lists.items()
        for rank, item in enumerate(items)
    ]
    return pd.DataFrame(rows, columns=["user", "item", "score", "rank"])


def hidden_frame(hidden):
    return pd.DataFrame([(u, i) for u, items in hidden.items() for i in sorted(items)], columns=["user", "item"])


def context_of(interactions):
    users, items = (np.array(column) for column in zip(*interactions))
    return stack_features.context(users, items, np.arange(len(users)), pd.DataFrame(index=pd.Index([], name="item")))


@pytest.fixture(scope="module")
def case():
    hidden, a, b, b_scores, interactions = last_item_case()
    lists = [frame(a), frame(b, b_scores)]
    return hidden_frame(hidden), lists, context_of(interactions)


def test_the_stage_takes_a_members_top_item_where_the_score_blend_cannot(case):
    hidden, lists, ctx = case
    options = stack.Options(folds=4)
    staged = stack.evaluate(lists, ["A", "B"], hidden, ctx, options, ["members", "history", "popularity"])
    score = simple_blend("score", lists, hidden)
    # the score blend's best: A's top 10 (3 of 4), or B's top item with a few of its flat followers
    assert score["cross_fitted"][RECALL] <= 0.80
    assert staged["cross_fitted"][RECALL] >= score["cross_fitted"][RECALL] + 0.10
    top = staged["cross_fitted_lists"]
    firsts = top[top["rank"] == 0].merge(lists[1][lists[1]["rank"] == 0], on=["user", "item"])
    assert len(firsts) >= 0.9 * USERS  # B's top item leads nearly every user's list


def test_the_cross_fit_never_trains_on_the_users_it_scores(case):
    """Moving fold 0's hidden items changes nothing in fold 0's cross-fitted lists (its model never saw those
    labels), while the models trained on fold 0 (the other folds', the final one) change."""
    hidden, lists, ctx = case
    options = stack.Options(folds=4, bags=1)
    groups = ["members", "history"]
    first = stack.evaluate(lists, ["A", "B"], hidden, ctx, options, groups, seed=1)
    fold = stack.user_folds(hidden["user"], options.folds, seed=1)
    moved_users = fold.index[fold == 0]
    b = lists[1]
    moved = b[b["user"].isin(moved_users) & b["rank"].between(1, 4)][["user", "item"]]  # B's noise as the answers
    changed = pd.concat([hidden[~hidden["user"].isin(moved_users)], moved]).sort_values(["user", "item"])
    second = stack.evaluate(lists, ["A", "B"], changed, ctx, options, groups, seed=1)

    def of(result, users, inside=True):
        top = result["cross_fitted_lists"]
        return top[top["user"].isin(users) == inside].reset_index(drop=True)

    pd.testing.assert_frame_equal(of(first, moved_users), of(second, moved_users))
    assert not of(first, moved_users, False)[["user", "item"]].equals(of(second, moved_users, False)[["user", "item"]])
    assert first["stage"].models[0].model_to_string() != second["stage"].models[0].model_to_string()


def test_bagged_cross_fits_never_score_a_user_with_a_model_that_saw_the_users_labels(case):
    """With three bags, each drawing its own folds, a user's hidden items moved change nothing in that user's
    cross-fitted list, and change the other users' lists (scored by models that trained on the user) and every
    bag's final model."""
    hidden, lists, ctx = case
    options, groups = stack.Options(folds=4, bags=3), ["members", "history"]
    first = stack.evaluate(lists, ["A", "B"], hidden, ctx, options, groups, seed=1)
    user = hidden["user"].iloc[0]
    b = lists[1]
    moved = b[(b["user"] == user) & b["rank"].between(1, 4)][["user", "item"]]
    second = stack.evaluate(
        lists, ["A", "B"], pd.concat([hidden[hidden["user"] != user], moved]), ctx, options, groups, seed=1
    )

    def lists_of(result, inside):
        top = result["cross_fitted_lists"]
        return top[(top["user"] == user) == inside].reset_index(drop=True)

    pd.testing.assert_frame_equal(lists_of(first, True), lists_of(second, True))
    assert not lists_of(first, False)["score"].equals(lists_of(second, False)["score"])
    assert len(first["stage"].models) == 3 and len({fold["bag"] for fold in first["folds"]}) == 3
    for before, after in zip(first["stage"].models, second["stage"].models):
        assert before.model_to_string() != after.model_to_string()


def test_a_stage_blend_writes_a_submission_from_the_refit_lists(tmp_path, capsys):
    hidden, a, b, b_scores, interactions = last_item_case()
    data = write_data(tmp_path / "data", interactions, hidden)
    # the refit lists: the same members one step later, here their validation lists with the scores rescaled
    run_a = write_run(tmp_path / "A", data, a, a)
    run_b = write_run(tmp_path / "B", data, b, b, model="SASRec")
    b_frame = frame(b, b_scores)
    for name, scale in (("valid_top50.csv", 1), ("full_top50.csv", 3)):
        b_frame.assign(score=b_frame["score"] * scale)[["user", "item", "score"]].to_csv(run_b / name, index=False)
    assert main([str(run_a), str(run_b), "--method", "auto", "--folds", "4", "--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    summary = pd.read_json(tmp_path / "out" / "summary.json", typ="series")
    assert summary["method"] == "stack" and summary["choice"]["chosen"] == "stack"
    assert "chose stack" in printed and "feature importance" in printed
    submission = pd.read_csv(tmp_path / "out" / "submission.csv")
    assert submission.groupby("user").size().eq(10).all() and submission["user"].nunique() == USERS
    # the submission ranks B's top item first as on the holdout: rescaled refit scores do not move the stage
    firsts = submission.groupby("user").head(1).merge(b_frame[b_frame["rank"] == 0], on=["user", "item"])
    assert len(firsts) >= 0.9 * USERS
    shift = summary["stack"]["refit_shift"]
    members = {name: means for name, means in shift.items() if name.startswith(("A ", "B "))}
    assert members and all(valid == pytest.approx(full, abs=1e-3) for valid, full in members.values())


def test_the_stages_fit_reaches_a_submission_through_build_with_the_cross_fitted_estimate(tmp_path):
    hidden, a, b, b_scores, interactions = last_item_case(seed=2)
    data = write_data(tmp_path / "data", interactions, hidden)
    runs = [write_run(tmp_path / "A", data, a, a), write_run(tmp_path / "B", data, b, b)]
    summary = build(runs, "stack", "auto", 0, tmp_path / "out", options=stack.Options(folds=3))
    folds = summary["cross_fit"]["folds"]  # three folds in each of the default three bags
    assert summary["method"] == "stack" and len(folds) == 3 * stack.DEFAULT_BAGS
    assert all(sum(fold["users"] for fold in folds if fold["bag"] == bag) == USERS for bag in range(3))
    assert summary["holdout"][RECALL] <= summary["holdout_fitted"][RECALL]  # the fitted estimate is optimistic


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--features", "members,genere"], "unknown feature 'genere'; known: members, agreement"),
        (["--features", "members,year"], "'year' needs the item field 'year', which the data lacks"),
        (["--candidates", "5"], "stack.candidates must be an integer >= 10, got 5"),
        (["--folds", "1"], "stack.folds must be an integer >= 2, got 1"),
        (["--bags", "0"], "stack.bags must be an integer >= 1, got 0"),
        (["--weights", "1,2"], "--method stack fits its own blend: use --weights auto"),
    ],
)
def test_bad_stage_settings_are_refused_in_one_line_before_any_work(extra, expected, tmp_path, capsys):
    hidden, a, b, _, interactions = last_item_case()
    data = write_data(tmp_path / "data", interactions, hidden)
    runs = [str(write_run(tmp_path / name, data, a, b)) for name in "AB"]
    code = main([*runs, "--method", "stack", "--output", str(tmp_path / "out"), *extra])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and expected in error, error
    assert not (tmp_path / "out").exists()


def test_a_member_without_lists_is_refused_for_the_stage(tmp_path, capsys):
    hidden, a, b, _, interactions = last_item_case()
    data = write_data(tmp_path / "data", interactions, hidden)
    runs = [write_run(tmp_path / name, data, a, b) for name in "AB"]
    (runs[1] / "valid_top50.csv").unlink()
    assert main([*map(str, runs), "--method", "stack", "--output", str(tmp_path / "out")]) == 2
    assert "no valid_top50.csv" in capsys.readouterr().err


def test_a_holdout_that_no_candidate_holds_is_refused(case):
    hidden, lists, ctx = case
    elsewhere = hidden.assign(item=hidden["item"] + 10 * ITEMS)  # items no member lists
    with pytest.raises(stack.EnsembleError, match="nothing to learn"):
        stack.evaluate(lists, ["A", "B"], elsewhere, ctx, stack.Options(folds=3), ["members"])


def test_the_candidate_table_holds_each_members_rank_and_scaled_score_or_the_absent_values():
    a = pd.DataFrame({"user": 1, "item": [10, 20, 30], "score": [3.0, 2.0, 1.0], "rank": [0, 1, 2]})
    b = pd.DataFrame({"user": 1, "item": [20, 40], "score": [5.0, 5.0], "rank": [0, 1]})
    table = stack_features.candidate_table([a, b], 50)
    # sorted by best rank in any member, then item; absent: rank 50, scaled score -1; equal scores scale to 1
    assert table["item"].tolist() == [10, 20, 40, 30]
    assert table["best_rank"].tolist() == [0, 0, 1, 2]
    assert table["rank_0"].tolist() == [0, 1, 50, 2] and table["rank_1"].tolist() == [50, 0, 1, 50]
    assert table["score_0"].tolist() == [1.0, 0.5, -1.0, 0.0] and table["score_1"].tolist() == [-1.0, 1.0, 1.0, -1.0]
    assert table["votes"].tolist() == [1, 2, 1, 1]


def test_the_sequence_features_count_what_followed_the_users_latest_items():
    # users 1-3 watch 10 then 20 (then 40); user 4's latest item is 10: 20 followed 10 in every history, 30 never
    hour = 3600
    rows = [(1, 10, 0), (1, 20, 60), (2, 10, 0), (2, 20, 60), (2, 40, 120), (3, 10, 0), (3, 20, 60)]
    rows += [(4, 30, 0), (4, 50, 10 * hour), (4, 10, 10 * hour + 60)]  # a session of two after a long gap
    users, items, times = (np.array(column) for column in zip(*rows))
    ctx = stack_features.context(users, items, times, pd.DataFrame(index=pd.Index([], name="item")))
    table = pd.DataFrame({"user": [4, 4], "item": [20, 30]})
    x = stack_features.features(table, ["sequence"], ctx, [])
    # 10's followers: 20 three times, 40 once (two steps later): 20 is 3/4 of them, 30 none
    assert x["follows latest 1"].tolist() == pytest.approx([0.75, 0.0])
    assert x["follows latest 2"].tolist() == [0.0, 0.0]  # 50 was followed by 10 only
    assert x["last session"].tolist() == pytest.approx([np.log1p(2)] * 2)


def test_the_scale_benchs_synthetic_lists_are_shaped_like_a_runs_lists():
    """bench/stack.py --scale times the stage on made-up member lists: each must be what a run writes (every
    user's top 50 distinct unseen items, ranks 0..49 with non-increasing scores), the lifted items listed
    more often than the others."""
    from bench import stack as bench_stack

    hidden, _, _, _, interactions = last_item_case()
    ctx = context_of(interactions)
    train = [(u, i) for u, i in interactions if i not in hidden[u]]
    seen = bench_stack.user_items(ctx, *map(np.array, zip(*train)))
    lifted = hidden_frame(hidden)
    lists = bench_stack.synthetic_lists(ctx, seen, bench_stack.user_items(ctx, lifted["user"], lifted["item"]), 3, 0)
    assert len(lists) == 3
    train_pairs = pd.MultiIndex.from_tuples(train)
    for top in lists:
        assert top.groupby("user")["item"].nunique().eq(bench_stack.SCALE_DEPTH).all()
        assert top.groupby("user")["rank"].apply(list).map(lambda r: r == list(range(50))).all()
        assert (top.groupby("user")["score"].diff().dropna() <= 0).all()
        assert not pd.MultiIndex.from_frame(top[["user", "item"]]).isin(train_pairs).any()
    listed = pd.MultiIndex.from_frame(lists[0][["user", "item"]]).isin(pd.MultiIndex.from_frame(lifted))
    # 4 hidden of 380 unseen items per user fill 50 places: about 0.5 found by chance, many more when lifted
    assert listed.sum() / USERS > 2


def test_the_benchs_reuse_reads_finished_runs_in_the_recipes_order_and_names_the_missing(tmp_path):
    """bench/stack.py --reuse benches the member runs a previous bench left, without the recipe: each member of
    the recipe by its run folder's name, in the recipe's order; a member without a finished run is named."""
    from bench import stack as bench_stack

    names = [member.name for member in read_recipe(bench_stack.RECIPE, quick=True).members]
    for name in reversed(names):
        (tmp_path / "runs" / f"{name}-0123456789ab").mkdir(parents=True)
        (tmp_path / "runs" / f"{name}-0123456789ab" / "summary.json").write_text("{}")
    runs, status = bench_stack.finished_runs(tmp_path)
    assert list(runs) == names and all(path.name.startswith(name) for name, path in runs.items())
    assert set(status.values()) == {"reused"}
    (tmp_path / "runs" / f"{names[-1]}-0123456789ab" / "summary.json").unlink()  # an unfinished run
    with pytest.raises(SystemExit, match=f"no finished run of {names[-1]}$"):
        bench_stack.finished_runs(tmp_path)
