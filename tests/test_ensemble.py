"""Ensembles on constructed runs whose right blend is known by hand."""

import json

import numpy as np
import pandas as pd
import pytest

from recbole_ext.blend.ensemble import build
from recbole_ext.blend.fusion import EnsembleError, evaluate, priority_fusion, rank_fusion, score_fusion
from recbole_ext.ensemble import main
from recbole_ext.evaluator.metrics import split_users


def lists_frame(lists, scores=None):
    """{user: [items, best first]} -> frame (user, item, score, rank); scores {user: [...]} or falling by rank."""
    rows = []
    for user, items in lists.items():
        for rank, item in enumerate(items):
            score = scores[user][rank] if scores else float(len(items) - rank)
            rows.append((user, item, score, rank))
    return pd.DataFrame(rows, columns=["user", "item", "score", "rank"])


def fused(top):
    """{user: [items in blended order]}"""
    return {user: rows.sort_values("rank")["item"].tolist() for user, rows in top.groupby("user")}


def recall_by_hand(lists, hidden):
    """The competition's recall@10 written out plainly; lists {user: items best first}, hidden {user: set}."""
    per_user = [len(set(lists.get(u, [])[:10]) & items) / min(10, len(items)) for u, items in hidden.items()]
    return sum(per_user) / len(per_user)


def write_data(folder, interactions, hidden, fingerprint="fp-1"):
    """The parts of a prepared data folder an ensemble reads: manifest, both .inter files, holdout.csv."""
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"name": "movies", "fingerprint": fingerprint, "counts": {}}))
    held = {(u, i) for u, items in hidden.items() for i in items}
    for name, rows in (("movies", interactions), ("movies-val", [r for r in interactions if r not in held])):
        (folder / name).mkdir(parents=True)
        lines = ["user_id:token\titem_id:token\ttimestamp:float"]
        lines += [f"{u}\t{i}\t{t}" for t, (u, i) in enumerate(rows)]
        (folder / name / f"{name}.inter").write_text("\n".join(lines) + "\n")
    rows = [(u, i, 0, "last") for u, items in hidden.items() for i in sorted(items)]
    pd.DataFrame(rows, columns=["user", "item", "time", "part"]).to_csv(folder / "holdout.csv", index=False)
    return folder


def write_run(folder, data, valid, full, model="EASE", fingerprint="fp-1", holdout_path=None):
    """A finished run folder; valid and full are {user: [items, best first]}."""
    folder.mkdir(parents=True)
    lists_frame(valid)[["user", "item", "score"]].to_csv(folder / "valid_top50.csv", index=False)
    lists_frame(full)[["user", "item", "score"]].to_csv(folder / "full_top50.csv", index=False)
    submission = lists_frame(full).query("rank < 10")[["user", "item"]]
    submission.to_csv(folder / "submission.csv", index=False)
    summary = {
        "model": model,
        "holdout": {"recall@10": 0.0, "ndcg@10": 0.0},
        "timings": {"valid_train": 1.0},
        "data": {
            "fingerprint": fingerprint,
            "data_path": str(data),
            "holdout_path": str(holdout_path or data / "holdout.csv"),
            "counts": {},
        },
        "config": {},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


# --- the methods on hand-made lists ---


def test_priority_puts_shared_items_first_then_follows_the_run_order():
    a = lists_frame({1: [1, 2, 3, 4]})
    b = lists_frame({1: [5, 3, 6, 1]})
    c = lists_frame({1: [6, 7, 3, 8]})
    # votes: 3 in all three runs; 1 in a and b; 6 in b and c; the rest in one run
    # order a, b, c: 3; then 1 (led by a) before 6 (led by b); then a's own: 2
    assert fused(priority_fusion([a, b, c], [0, 1, 2], k=4)) == {1: [3, 1, 6, 2]}
    # order c, b, a: 3; then 6 (led by c) before 1 (led by b); then c's own: 7
    assert fused(priority_fusion([a, b, c], [2, 1, 0], k=4)) == {1: [3, 6, 1, 7]}


def test_priority_with_nothing_shared_is_the_first_run_alone():
    a = lists_frame({1: [1, 2, 3], 2: [4, 5, 6]})
    b = lists_frame({1: [7, 8, 9], 2: [6, 9, 8]})
    # user 2 shares item 6: it moves to the front; user 1 shares nothing
    assert fused(priority_fusion([a, b], [0, 1], k=3)) == {1: [1, 2, 3], 2: [6, 4, 5]}
    assert fused(priority_fusion([a, b], [1, 0], k=3)) == {1: [7, 8, 9], 2: [6, 9, 8]}


def test_rank_fusion_sums_weighted_reciprocal_ranks():
    a = lists_frame({1: [10, 20, 30]})
    b = lists_frame({1: [30, 40, 10]})
    # 1 / (60 + rank + 1), rank 0 = best; a missing item adds nothing
    by_hand = {10: 0.75 / 61 + 0.25 / 63, 20: 0.75 / 62, 30: 0.75 / 63 + 0.25 / 61, 40: 0.25 / 62}
    top = rank_fusion([a, b], [0.75, 0.25], k=4)
    assert fused(top) == {1: [10, 30, 20, 40]}
    assert dict(zip(top["item"], top["score"])) == pytest.approx(by_hand, rel=1e-12)
    assert fused(rank_fusion([a, b], [0.25, 0.75], k=4)) == {1: [30, 10, 40, 20]}


def test_score_fusion_sums_weighted_min_max_scores():
    a = lists_frame({1: [10, 20, 30], 2: [1, 2, 3]}, scores={1: [5.0, 3.0, 1.0], 2: [7.0, 7.0, 7.0]})
    b = lists_frame({1: [30, 40, 10], 2: [3, 4, 5]}, scores={1: [0.9, 0.5, 0.1], 2: [2.0, 1.0, 0.0]})
    # user 1: a -> 10: 1, 20: .5, 30: 0; b -> 30: 1, 40: .5, 10: 0
    top = score_fusion([a, b], [0.3, 0.7], k=4)
    assert fused(top)[1] == [30, 40, 10, 20]
    user_1 = top[top["user"] == 1]
    assert dict(zip(user_1["item"], user_1["score"])) == pytest.approx({30: 0.7, 40: 0.35, 10: 0.3, 20: 0.15})
    # user 2: a's equal scores all count 1; b -> 3: 1, 4: .5, 5: 0
    user_2 = top[top["user"] == 2]
    assert dict(zip(user_2["item"], user_2["score"])) == pytest.approx({3: 1.0, 1: 0.3, 2: 0.3, 4: 0.35})
    assert fused(top)[2] == [3, 4, 1, 2]  # 1 before 2 on a tie: 1 has the better rank in a


def test_equal_fused_scores_fall_back_to_the_best_rank_then_the_item():
    a = lists_frame({1: [10, 20, 30]}, scores={1: [3.0, 2.0, 1.0]})
    b = lists_frame({1: [30, 40, 10]}, scores={1: [3.0, 2.0, 1.0]})
    # equal weights: 10 and 30 both .5 with best rank 0, 20 and 40 both .25 with best rank 1
    assert fused(score_fusion([a, b], [1, 1], k=4)) == {1: [10, 30, 20, 40]}


def test_a_user_with_fewer_candidates_than_k_but_ten_gets_them_all():
    # a seed average of top_n lists: user 2 has only 12 unseen items, the lists of user 1 are full
    a = lists_frame({1: list(range(1, 21)), 2: list(range(1, 13))})
    b = lists_frame({1: list(range(11, 31)), 2: list(range(12, 0, -1))})
    for blend in (rank_fusion, score_fusion):
        top = blend([a, b], [1, 1], k=20)
        assert top.groupby("user").size().to_dict() == {1: 20, 2: 12}
        assert sorted(top[top.user == 2]["item"]) == list(range(1, 13))
        assert top.groupby("user")["rank"].apply(list).to_dict() == {1: list(range(20)), 2: list(range(12))}


def test_a_user_with_fewer_than_ten_candidates_is_an_error_not_padding():
    a = lists_frame({1: list(range(1, 11)), 2: [1, 2, 3, 4, 5, 6]})
    b = lists_frame({1: list(range(11, 21)), 2: [4, 5, 6, 7, 8, 9]})  # user 2: 9 distinct items
    for blend in (lambda: rank_fusion([a, b], [1, 1]), lambda: score_fusion([a, b], [1, 1])):
        with pytest.raises(EnsembleError, match=r"1 users have fewer than 10 distinct items.*\[2\]"):
            blend()


# --- weights chosen on the holdout ---


def test_split_users_is_two_seeded_halves():
    users = np.arange(1, 22)
    half_a, half_b = split_users(np.concatenate([users, users]), seed=3)  # repeated ids count once
    assert sorted(np.concatenate([half_a, half_b]).tolist()) == users.tolist()
    assert (len(half_a), len(half_b)) == (10, 11)
    again = split_users(users, seed=3)
    assert again[0].tolist() == half_a.tolist()
    assert split_users(users, seed=4)[0].tolist() != half_a.tolist()


@pytest.mark.parametrize("method", ["priority", "rank", "score"])
def test_cross_fitted_score_uses_the_weights_of_the_other_half(method):
    # every user gets the same two lists: x = 1..50, y = 51..100. Half a wants x's
    # top 10, half b y's top 10. Any blend gives half the users what they want
    # (fitted recall 0.5); weights fitted on one half serve the other half nothing.
    users = np.arange(1, 21)
    half_a, half_b = split_users(users, seed=0)
    x = lists_frame({u: list(range(1, 51)) for u in users})
    y = lists_frame({u: list(range(51, 101)) for u in users})
    wanted = {**{u: range(1, 11) for u in half_a}, **{u: range(51, 61) for u in half_b}}
    hidden = pd.DataFrame([(u, i) for u, items in wanted.items() for i in items], columns=["user", "item"])
    result = evaluate(method, [x, y], hidden, "auto", seed=0)
    assert result["fitted"]["recall@10"] == pytest.approx(0.5)
    assert result["cross_fitted"]["recall@10"] == 0.0


@pytest.fixture(scope="module")
def noise_and_signal(tmp_path_factory):
    """40 users; `good` puts each user's 5 hidden items within its first 15, `noise` is random."""
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("noise")
    items = np.arange(1, 201)
    seen, hidden, good, noise, full = {}, {}, {}, {}, {}
    for user in range(1, 41):
        picked = rng.choice(items, 15, replace=False)
        seen[user], hidden[user] = picked[:10].tolist(), set(picked[10:].tolist())
        unseen = np.setdiff1d(items, seen[user])  # the validation fit never saw the hidden items
        others = rng.permutation(np.setdiff1d(unseen, list(hidden[user])))[:45].tolist()
        slots = sorted(rng.choice(15, 5, replace=False))
        good[user] = others
        for slot, item in zip(slots, sorted(hidden[user])):
            good[user].insert(slot, item)
        noise[user] = rng.permutation(unseen)[:50].tolist()
        full[user] = rng.permutation(np.setdiff1d(unseen, list(hidden[user])))[:50].tolist()
    interactions = [(u, i) for u in seen for i in seen[u] + sorted(hidden[u])]
    data = write_data(root / "data", interactions, hidden)
    runs = (write_run(root / "noise", data, noise, full, model="Pop"), write_run(root / "good", data, good, full))
    return root, runs, recall_by_hand(good, hidden), recall_by_hand(noise, hidden)


@pytest.mark.parametrize("method", ["rank", "score"])
def test_auto_weights_recover_the_better_run_when_the_other_is_noise(method, noise_and_signal):
    root, runs, good_recall, noise_recall = noise_and_signal
    summary = build(runs, method, "auto", output=root / f"blend-{method}")  # noise first: grid ties favour it
    assert [m["holdout"]["recall@10"] for m in summary["members"]] == pytest.approx([noise_recall, good_recall])
    assert good_recall > 0.5 > 0.2 > noise_recall
    fitted = [summary["weights"]] + [half["weights"] for half in summary["cross_fit"]["halves"]]
    for weights in fitted:
        assert weights["good"] > weights["noise"], weights
    assert summary["holdout_fitted"]["recall@10"] >= good_recall - 1e-12  # the grid holds the good run alone
    assert summary["holdout"]["recall@10"] > 0.9 * good_recall


def test_auto_priority_order_puts_the_better_run_first(noise_and_signal):
    root, runs, good_recall, _ = noise_and_signal
    summary = build(runs, "priority", "auto", output=root / "blend-priority")
    assert summary["priority_order"] == ["good", "noise"]
    # two runs at depth 10: the set of the first run's top 10, so its recall exactly
    assert summary["holdout_fitted"]["recall@10"] == pytest.approx(good_recall)
    assert summary["holdout"]["recall@10"] == pytest.approx(good_recall)


# --- checks of the runs and the written ensemble ---


@pytest.fixture
def two_runs(tmp_path):
    """12 users who have seen items 1..5; runs a and b rank the other items in two different orders."""
    users = range(1, 13)
    hidden = {u: {6 + u % 3, 20 + u} for u in users}
    data = write_data(tmp_path / "data", [(u, i) for u in users for i in range(1, 6)], hidden)
    a = {u: list(range(6, 41)) for u in users}
    b = {u: list(range(40, 5, -1)) for u in users}
    return tmp_path, data, write_run(tmp_path / "a", data, a, a), write_run(tmp_path / "b", data, b, b, model="SASRec")


def check_submission(submission, data):
    """The competition's rules: user,item; 10 distinct unseen items for every user of the data."""
    inter = pd.read_csv(data / "movies" / "movies.inter", sep="\t")
    inter.columns = ["user", "item", "time"]
    assert list(submission.columns) == ["user", "item"]
    per_user = submission.groupby("user").size()
    assert set(per_user.index) == set(inter["user"]) and (per_user == 10).all()
    assert not submission.duplicated().any()
    assert submission.merge(inter, on=["user", "item"]).empty


@pytest.mark.parametrize("method", ["priority", "rank", "score"])
def test_the_submission_obeys_the_rules_and_follows_the_weights(method, two_runs):
    root, data, a, b = two_runs
    output = root / "out"
    summary = build([a, b], method, "0,1", output=output)  # given weights: b alone (priority: b first)
    submission = pd.read_csv(output / "submission.csv")
    check_submission(submission, data)
    # b's top 10 is 40..31; priority puts the items both top-10 lists hold (none: a's are 6..15) first
    assert fused(submission.assign(rank=submission.groupby("user").cumcount())) == {
        u: list(range(40, 30, -1)) for u in range(1, 13)
    }
    written = json.loads((output / "summary.json").read_text())
    assert written["holdout"] == written["holdout_fitted"] == summary["holdout"]  # nothing fitted
    assert not written["weights_fitted"] and [m["name"] for m in written["members"]] == ["a", "b"]
    assert written["data"]["fingerprint"] == "fp-1"
    hidden = {u: {6 + u % 3, 20 + u} for u in range(1, 13)}
    b_lists = {u: list(range(40, 5, -1)) for u in range(1, 13)}
    assert written["holdout"]["recall@10"] == pytest.approx(recall_by_hand(b_lists, hidden))
    assert sorted(p.name for p in output.iterdir()) == ["holdout_users.csv", "submission.csv", "summary.json"]


def test_auto_weights_are_fitted_and_reported_for_both_halves(two_runs):
    root, data, a, b = two_runs
    summary = build([a, b], "rank", output=root / "out")
    hidden = {u: {6 + u % 3, 20 + u} for u in range(1, 13)}
    a_lists = {u: list(range(6, 41)) for u in range(1, 13)}
    # a's top 10 (6..15) holds one hidden item of each user, b's (40..31) only 20 + u for u >= 11
    assert summary["members"][0]["holdout"]["recall@10"] == pytest.approx(recall_by_hand(a_lists, hidden))
    assert summary["holdout_fitted"]["recall@10"] >= summary["members"][0]["holdout"]["recall@10"]
    assert summary["weights_fitted"] and [h["users"] for h in summary["cross_fit"]["halves"]] == [6, 6]
    check_submission(pd.read_csv(root / "out" / "submission.csv"), data)


def refused(capsys, argv, tmp_path):
    """main's exit code and message, checking that nothing was written."""
    before = set(tmp_path.rglob("*"))
    code = main(argv + ["--output", str(tmp_path / "never")])
    assert set(tmp_path.rglob("*")) - before == set(), "a refused ensemble wrote files"
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    return code, error


def test_runs_with_different_holdouts_are_refused(two_runs, capsys):
    root, data, a, _ = two_runs
    other = write_data(root / "data2", [(1, 1)], {1: {2}})
    c = write_run(root / "c", data, {1: [6]}, {1: [6]}, holdout_path=other / "holdout.csv")
    code, error = refused(capsys, [str(a), str(c)], root)
    assert code == 2
    assert error == (
        f"error: the runs differ in holdout: {data / 'holdout.csv'} (a); {other / 'holdout.csv'} (c). "
        "Blend runs made on the same prepared data."
    )


def test_runs_on_the_same_data_under_two_data_folders_blend(two_runs):
    root, data, a, _ = two_runs
    users = range(1, 13)
    hidden = {u: {6 + u % 3, 20 + u} for u in users}
    copy = write_data(root / "data_dir2", [(u, i) for u in users for i in range(1, 6)], hidden)  # the same files
    lists = {u: list(range(40, 5, -1)) for u in users}
    c = write_run(root / "c", copy, lists, lists)
    summary = build([a, c], "rank", "1,1", output=root / "out")
    assert [m["name"] for m in summary["members"]] == ["a", "c"]
    (copy / "holdout.csv").write_text((copy / "holdout.csv").read_text().replace("last", "random"))
    with pytest.raises(EnsembleError, match="the runs differ in holdout"):
        build([a, c], "rank", "1,1", output=root / "out2")


def test_runs_with_different_data_are_refused(two_runs, capsys):
    root, data, a, b = two_runs
    c = write_run(root / "c", data, {1: [6]}, {1: [6]}, fingerprint="fp-2")
    code, error = refused(capsys, [str(a), str(b), str(c)], root)
    assert code == 2 and error.startswith("error: the runs differ in data fingerprint: fp-1 (a, b); fp-2 (c).")


def test_unfinished_runs_and_bad_weights_are_refused(two_runs, capsys):
    root, _, a, b = two_runs
    (b / "full_top50.csv").unlink()
    cases = {
        (str(a), str(root / "nowhere")): f"error: {root / 'nowhere'}: no such run folder",
        (str(a), str(b)): f"error: {b}: not a finished run (no full_top50.csv; a validate-only trial?)",
        (str(a), str(a)): f"error: the same run is given twice: {a} {a}",
        (str(a), str(b), "--weights", "1,x"): "error: --weights '1,x': expected auto or 2 comma-separated numbers, "
        "one per run",
        (str(a), str(b), "--weights", "1,2,3"): "error: --weights '1,2,3': expected auto or 2 comma-separated numbers, "
        "one per run; got 3",
        (str(a), str(b), "--weights", "0,0"): "error: --weights '0,0': weights must be non-negative and not all zero",
    }
    for argv, message in cases.items():
        assert refused(capsys, list(argv), root) == (2, message)


def test_an_ensemble_with_too_few_items_for_a_user_writes_nothing(tmp_path, capsys):
    data = write_data(tmp_path / "data", [(1, 1), (2, 1)], {1: {2}, 2: {3}})
    lists = {1: list(range(2, 14)), 2: [2, 3, 4, 5, 6]}
    a, b = write_run(tmp_path / "a", data, lists, lists), write_run(tmp_path / "b", data, lists, lists)
    code, error = refused(capsys, [str(a), str(b), "--weights", "1,1"], tmp_path)
    assert code == 2 and "1 users have fewer than 10 distinct items" in error and "[2]" in error


def test_the_report_shows_an_ensemble_with_its_cross_fitted_score(two_runs):
    from recbole_ext.report import report_table

    root, _, a, b = two_runs
    summary = build([a, b], "score", output=root / "blend")
    table = report_table(root)[0].set_index("run")
    assert table.loc["blend", "model"] == "ensemble(score)"
    assert table.loc["blend", "recall@10"] == summary["holdout"]["recall@10"]
    assert table.loc["blend", "settings"].startswith("a+b weights=")
    assert set(table.index) == {"a", "b", "blend"}


def test_the_blend_is_compared_with_its_best_member_over_the_same_users(two_runs, capsys):
    root, _, a, b = two_runs
    assert main([str(a), str(b), "--method", "rank", "--weights", "0,1", "--output", str(root / "out")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((root / "out" / "summary.json").read_text())
    # per user: a's top 10 (6..15) holds 6 + u % 3, one of two hidden items: 0.5 for every user; the
    # blend is b alone, whose top 10 (40..31) holds 20 + u for users 11 and 12 only: 0.5 for them, else 0
    versus = summary["vs_best_member"]
    assert versus["member"] == "a"
    assert versus["difference"] == pytest.approx((10 * -0.5 + 2 * 0.0) / 12)
    low, high = versus["interval"]
    assert -0.5 <= low < versus["difference"] < high <= 0.0
    assert "cross-fitted blend minus best member (a): -0.4167 (95% interval" in printed
    assert "beyond the noise of this holdout" in printed
    users = pd.read_csv(root / "out" / "holdout_users.csv", index_col="user")
    assert users["recall@10"].to_dict() == {u: 0.5 if u >= 11 else 0.0 for u in range(1, 13)}
    # each member's interval, and the blend's, from the same resampled users
    assert summary["members"][0]["interval"]["recall@10"] == [0.5, 0.5]  # every user 0.5: no spread
    assert (
        summary["holdout_detail"]["interval"]["recall@10"][0]
        < 2 / 12 * 0.5
        < summary["holdout_detail"]["interval"]["recall@10"][1]
    )
    assert summary["holdout_detail"]["parts"]["last"]["recall@10"] == pytest.approx(2 / 12 * 0.5)


def test_a_run_whose_final_fit_failed_is_refused_with_its_error(two_runs, capsys):
    root, _, a, b = two_runs
    summary = json.loads((b / "summary.json").read_text())
    (b / "summary.json").write_text(json.dumps({**summary, "error": "RuntimeError: CUDA out of memory"}))
    assert refused(capsys, [str(a), str(b)], root) == (
        2,
        f"error: {b}: a run that stopped early (RuntimeError: CUDA out of memory): it has its validation but "
        "no final fit to blend",
    )
