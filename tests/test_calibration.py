"""The board's share of latest items: the fit on synthetic scores, the listing's estimate and
leaderboard.json, and the objectives that read it (`recall@10 calibrated`, `recall@10 last:0.5`)."""

import json

import numpy as np
import pandas as pd
import pytest
from test_ensemble import write_data
from test_ensemble import write_run as blend_run
from test_leaderboard import write_run
from test_stack import last_item_case

from bench.calibration_boards import synthetic_board
from recbole_ext.blend.stack import part_weights
from recbole_ext.config.settings import ConfigError, load_settings
from recbole_ext.ensemble import main as ensemble_main
from recbole_ext.evaluator.calibration import BOARD_USER_SHARE, GRID, fit_share, noise_covariance
from recbole_ext.evaluator.metrics import Objective, parse_objective
from recbole_ext.leaderboard import main

# part recalls of five kinds of submission: EASE finds random earlier items, a sequential model the latest
LAST = np.array([0.10, 0.27, 0.18, 0.14, 0.22])
RANDOM = np.array([0.30, 0.12, 0.24, 0.28, 0.20])


def board_scores(share, level=1.0, noise=0.0, seed=0):
    """What a board with this share of latest items scores, at this level against the holdout."""
    exact = level * (share * LAST + (1 - share) * RANDOM)
    return exact + np.random.default_rng(seed).normal(0, noise, len(exact))


@pytest.mark.parametrize("share", [0.1, 0.2, 0.5, 0.8])
def test_the_fit_recovers_a_known_share_from_synthetic_scores(share):
    exact = fit_share(LAST, RANDOM, board_scores(share))
    assert exact.last_share == pytest.approx(share, abs=1e-9) and exact.interval == pytest.approx((share, share))
    assert np.abs(exact.residuals).max() < 1e-9 and exact.free_level == pytest.approx((share, 1.0), abs=1e-3)
    assert exact.level_rejected is False
    for seed in range(3):
        noisy = fit_share(LAST[:4], RANDOM[:4], board_scores(share, noise=0.005, seed=seed)[:4])
        low, high = noisy.interval
        assert low <= share <= high and high - low <= 0.3
        assert abs(noisy.last_share - share) < 0.1 and noisy.level_rejected is False


def test_the_interval_holds_the_true_share_as_often_as_it_says_where_its_assumptions_hold():
    """Independent errors of one size: the F test's interval holds the true share in about 95% of boards."""
    held = []
    for seed in range(200):
        low, high = fit_share(LAST, RANDOM, board_scores(0.3, noise=0.01, seed=seed)).interval
        held.append(low <= 0.3 <= high)
    assert 0.9 <= np.mean(held) <= 0.99


def test_the_sampling_noise_is_the_spread_of_each_users_mix_over_the_holdouts_and_the_boards_users():
    rng = np.random.default_rng(0)
    last, random = rng.random((50, 3)), rng.random((50, 3))
    last[0, 1] = np.nan  # a user without a latest item: its random part counts
    filled = np.where(np.isnan(last), random, last)
    expected = np.cov(0.3 * filled + 0.7 * random, rowvar=False) * (1 / 50 + 1 / (BOARD_USER_SHARE * 50))
    assert noise_covariance(last, random)[np.searchsorted(GRID, 0.3)] == pytest.approx(expected)


def test_residuals_beyond_the_users_sampling_noise_are_flagged_with_the_submission_that_strays():
    """Synthetic boards where the truth is known: resampled holdouts stay within the noise; a submission that
    scores 0.75 times its holdout chances on the board is flagged and named."""
    within, flagged, named = [], [], []
    for seed in range(20):
        means, users = synthetic_board(0.4, seed)
        within.append(fit_share(*means, user_scores=users).noise_p >= 0.05)
        means, users = synthetic_board(0.4, seed, shifted={1: 0.75})
        strayed = fit_share(*means, user_scores=users, names=["EASE", "SASRec", "VAE", "blend"])
        flagged.append(strayed.noise_p < 0.05)
        named.append("most SASRec, z -" in strayed.describe())
    assert np.mean(within) >= 0.9 and np.mean(flagged) >= 0.9 and np.mean(named) >= 0.9
    assert (
        "the residuals are within that noise (chi-square p"
        in fit_share(*synthetic_board(0.4, 0)[0], user_scores=synthetic_board(0.4, 0)[1]).describe()
    )


def test_the_interval_spans_the_residuals_and_the_sampling_noise_and_holds_the_truth_of_synthetic_boards():
    """Synthetic boards where the truth is known: resampled holdouts, whose submissions' errors are correlated
    (the same users), which the F test alone misses more often than 5%, and boards where one submission scores
    0.75 times its holdout chances, which the sampling noise alone misses."""
    for shifted in (None, {1: 0.75}):
        held = []
        for seed in range(60):
            means, users = synthetic_board(0.4, seed, shifted=shifted)
            estimate = fit_share(*means, user_scores=users)
            (low, high), parts = estimate.interval, estimate.parts_of_interval
            assert all(low <= part_low and part_high <= high for part_low, part_high in parts)
            assert low in (parts[0][0], parts[1][0]) and high in (parts[0][1], parts[1][1])
            held.append(low <= 0.4 <= high)
        assert np.mean(held) >= 0.93  # the F test alone: 0.90 on the resampled holdouts; the noise alone: 0.00
    described = estimate.describe()
    assert (
        "; the interval spans the residuals' (F test, {:.2f} to {:.2f}) and the users' sampling noise's".format(
            *parts[0]
        )
        in described
    )


def test_the_submission_that_pins_the_share_down_is_the_one_whose_parts_differ_most():
    """board - random = a (last - random): three EASE-like submissions (random part far above the last) pin a
    down, a sequential one as good at both parts says nothing about it."""
    last, random = np.array([0.10, 0.11, 0.09, 0.14]), np.array([0.30, 0.33, 0.27, 0.145])
    board = 0.5 * last + 0.5 * random + [0.002, -0.002, 0.001, -0.001]
    estimate = fit_share(last, random, board, names=["EASE-a", "EASE-b", "EASE-c", "gSASRec"])
    weights = estimate.as_json()["weights"]
    assert max(weights, key=weights.get) == "EASE-b" and weights["gSASRec"] < 0.01
    assert weights["gSASRec"] == pytest.approx(0.005**2 / (0.2**2 + 0.22**2 + 0.18**2 + 0.005**2))
    low, high = estimate.interval
    now, more = estimate.half_width
    assert now == pytest.approx((high - low) / 2, abs=0.002) and more < now
    assert (
        f"pinned down most by EASE-b (weight {weights['EASE-b']:.2f}; a submission weighs its (last - random)²): "
        in (estimate.describe())
    )


def test_a_wider_noise_gives_a_wider_interval():
    widths = [np.diff(fit_share(LAST, RANDOM, board_scores(0.4, noise=noise)).interval)[0] for noise in (0.001, 0.01)]
    assert widths[0] < widths[1]


def test_a_board_at_another_level_than_the_holdouts_is_flagged():
    harder = fit_share(LAST, RANDOM, board_scores(0.5, level=0.8, noise=0.001))
    assert harder.level_rejected is True and harder.free_level == pytest.approx((0.5, 0.8), abs=0.05)
    assert (
        "with a free level: 0.80 × (0.50 · last + 0.50 · random), rejects level 1 (F test): the board scores below "
        "the mix (harder than the holdout, for all or some submissions), so the share is less sure; pinned down"
    ) in harder.describe()
    assert harder.as_json()["level_rejected"] is True


def test_the_share_of_the_simulated_ml_latest_small_board_is_found():
    """The log of bench/calibration.py on ml-latest-small, board 5 last + 5 random (true share 0.5), 2026-12-07:
    EASE, MultiVAE, gSASRec (5 epochs), their blend. gSASRec scores 0.73 times its holdout parts on the board:
    with a free level the fit took the board for 0.63 × random (share 0.00, interval 0.00 to 0.19)."""
    last = [0.0532786885245901, 0.0434426229508196, 0.0426229508196721, 0.05327868852459016]
    random = [0.2069067135050741, 0.1390612802498048, 0.0787900078064012, 0.20690671350507417]
    estimate = fit_share(last, random, [0.130607, 0.088318, 0.048598, 0.130607])
    low, high = estimate.interval
    assert low <= 0.5 <= high and high - low <= 0.3 and estimate.last_share == pytest.approx(0.5, abs=0.05)
    assert estimate.level_rejected is True and estimate.free_level == pytest.approx((0.0, 0.63), abs=0.01)


def test_too_few_submissions_or_parts_alike_cannot_tell():
    few = fit_share(LAST[:2], RANDOM[:2], board_scores(0.5)[:2])
    assert few.last_share is None and few.interval is None
    assert few.describe() == "public latest-item share: cannot tell (2 submissions with part scores; record at least 3)"
    alike = fit_share(LAST, 2.0 * LAST, 0.9 * LAST)  # every submission has the same profile of the parts
    assert alike.last_share is None and alike.describe().startswith(
        "public latest-item share: cannot tell (the submissions' last and random part scores are too alike"
    )
    assert alike.as_json()["suggested_holdout"] is None
    means, users = synthetic_board(0.4, 0)  # with the users' noise known: the same answers, no interval
    few = fit_share(*(values[:2] for values in means), user_scores=[values[:, :2] for values in users])
    assert few.last_share is None and few.as_json()["sampling_noise"] is None and few.as_json()["weights"] is None
    same = fit_share(means[0], 3 * means[0], means[2], user_scores=(users[0], 3 * users[0]))
    assert same.last_share is None and same.interval is None


def log_submissions(outputs, share, n=4, private_share=None):
    """n run folders with part scores, recorded with the board scores of a board of this share."""
    public = board_scores(share)
    private = None if private_share is None else board_scores(private_share)
    for i in range(n):
        parts = {"last": {"recall@10": LAST[i]}, "random": {"recall@10": RANDOM[i]}}
        summary_recall = 0.2 * LAST[i] + 0.8 * RANDOM[i]
        run = write_run(outputs / f"run-{i}", summary_recall, holdout_detail={"parts": parts})
        argv = ["add", str(run), "--public", f"{public[i]:.6f}", "--outputs", str(outputs)]
        if private is not None:
            argv += ["--private", f"{private[i]:.6f}"]
        assert main(argv) == 0


def test_the_listing_estimates_each_board_and_writes_leaderboard_json(tmp_path, capsys):
    outputs = tmp_path / "outputs"
    log_submissions(outputs, 0.3, private_share=0.6)
    assert pd.read_csv(outputs / "leaderboard.csv")["recall@10 last"].tolist() == LAST[:4].tolist()
    assert main(["--outputs", str(outputs)]) == 0
    printed = capsys.readouterr().out
    assert "public latest-item share 0.30 (95% interval 0.30 to 0.30, 4 submissions)" in printed
    assert "private latest-item share 0.60 (95% interval 0.60 to 0.60, 4 submissions)" in printed
    assert "the matching holdout: holdout.last: 3, holdout.random: 7" in printed  # base.yaml's total: 10
    estimates = json.loads((outputs / "leaderboard.json").read_text())
    calibration = estimates["calibration"]
    assert calibration["board"] == "public" and calibration["submissions"] == 4
    assert calibration["last_share"] == pytest.approx(0.3) and calibration["interval"] == pytest.approx([0.3, 0.3])
    assert calibration["suggested_holdout"] == {"last": 3, "random": 7}
    assert estimates["data"]["fp-1"]["private"]["last_share"] == pytest.approx(0.6)


def test_the_listing_sets_the_residuals_against_the_noise_of_the_runs_users(tmp_path, capsys):
    """Each run's holdout_users.csv gives the users' sampling noise: a run that scores 0.75 times its holdout
    chances on the board is named; with one file damaged there is no noise to judge by (and no traceback)."""
    outputs = tmp_path / "outputs"
    (last, random, board), (user_last, user_random) = synthetic_board(0.4, 0, shifted={1: 0.75})
    for i in range(4):
        parts = {"last": {"recall@10": last[i]}, "random": {"recall@10": random[i]}}
        run = write_run(outputs / f"run-{i}", 0.2, holdout_detail={"parts": parts})
        users = {
            "user": np.arange(len(user_last)),
            "recall@10 last": user_last[:, i],
            "recall@10 random": user_random[:, i],
        }
        pd.DataFrame(users).to_csv(run / "holdout_users.csv", index=False)
        assert main(["add", str(run), "--public", f"{board[i]:.6f}", "--outputs", str(outputs)]) == 0
    assert main(["--outputs", str(outputs)]) == 0
    assert "the residuals exceed that noise (chi-square p 0.0" in capsys.readouterr().out
    noise = json.loads((outputs / "leaderboard.json").read_text())["calibration"]["sampling_noise"]
    assert noise["chi2_p"] < 0.05 and sorted(noise["z"]) == [f"run-{i}" for i in range(4)]
    assert min(noise["z"], key=lambda name: noise["z"][name]) == "run-1" and noise["z"]["run-1"] < -3
    (outputs / "run-2" / "holdout_users.csv").write_text("not a table of users\n")
    assert main(["--outputs", str(outputs)]) == 0
    assert "sampling noise" not in capsys.readouterr().out
    assert json.loads((outputs / "leaderboard.json").read_text())["calibration"]["sampling_noise"] is None


def test_a_log_of_two_submissions_says_cannot_tell_and_writes_no_share(tmp_path, capsys):
    outputs = tmp_path / "outputs"
    log_submissions(outputs, 0.3, n=2)
    assert main(["--outputs", str(outputs)]) == 0
    assert "public latest-item share: cannot tell (2 submissions" in capsys.readouterr().out
    calibration = json.loads((outputs / "leaderboard.json").read_text())["calibration"]
    assert calibration["last_share"] is None and calibration["interval"] is None


def test_objective_names_are_parsed_in_one_place():
    assert parse_objective("Recall@10 last:0.25") == Objective("recall@10", share=0.25)
    assert parse_objective("recall@10 calibrated").name == "recall@10 calibrated"
    assert parse_objective("ndcg@10 random") == Objective("ndcg@10", "random")
    for bad in ("recall@10 last:1.5", "recall@10 last:x", "mrr@10", "recall@10 first", "recall@10 last random"):
        with pytest.raises(ValueError, match="must be recall@10 or ndcg@10"):
            parse_objective(bad)


def test_a_mix_scores_each_user_by_the_share_and_a_user_with_one_part_by_that_part():
    scores = pd.DataFrame({"recall@10 last": [1.0, 0.5, np.nan], "recall@10 random": [0.0, 0.25, 0.5]})
    values = Objective("recall@10", share=0.25).user_values(scores)
    assert values.tolist() == [0.25, 0.25 * 0.5 + 0.75 * 0.25, 0.5]


def test_valid_metric_calibrated_reads_the_logs_share_and_prints_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="reads the leaderboard's estimate in outputs/leaderboard.json, which is"):
        load_settings("EASE", overrides=["valid_metric=recall@10 calibrated"])
    log_submissions(tmp_path / "outputs", 0.35)
    assert main([]) == 0
    capsys.readouterr()
    settings = load_settings("EASE", overrides=["valid_metric=recall@10 calibrated"])
    share_line, used = capsys.readouterr().err.strip().splitlines()
    assert share_line == (
        "command line: valid_metric: recall@10 calibrated: the last part's share 0.35 (95% interval 0.35 to 0.35, "
        "4 public submissions, from outputs/leaderboard.json)"
    )
    # 0.35 of the default holdout's 10 items: about 4 latest items per user, more than its last part's 2 measure
    assert settings["valid_metric"] == "recall@10 last:0.2"
    assert used.startswith(
        "command line: valid_metric: recall@10 last:0.35 means about 4 of 10 hidden items per user are "
        "latest ones, more than the holdout's 2: "
    )
    assert used.endswith(
        "using recall@10 last:0.2, the share the holdout measures; the matching holdout measures 0.35: "
        "holdout.last: 4, holdout.random: 6 (docs/numbers.md)"
    )
    matching = load_settings("EASE", overrides=["valid_metric=recall@10 calibrated", "holdout.last=4"])
    assert matching["valid_metric"] == "recall@10 last:0.35"  # 4 of 12: the holdout measures 0.35
    assert "using" not in capsys.readouterr().err
    given = load_settings("EASE", overrides=["valid_metric=recall@10 last:0.5"])
    assert given["valid_metric"] == "recall@10 last:0.5"
    printed = capsys.readouterr().err
    assert "valid_metric: recall@10 last:0.5: the last part's share 0.5 (given)" in printed
    assert "caution: recall@10 last:0.5 means about 5 of 10" in printed
    for within in (
        ["valid_metric=recall@10 last:0.2"],
        ["valid_metric=recall@10 last:0.5", "holdout.last=5", "holdout.random=5"],
    ):
        load_settings("EASE", overrides=within)  # no more latest items than the holdout's last part holds
        assert "caution" not in capsys.readouterr().err
    with pytest.raises(ConfigError, match="'recall@10 last:0.5' follows the holdout's random part, which holdout"):
        load_settings("EASE", overrides=["valid_metric=recall@10 last:0.5", "holdout.random=0"])


def test_calibrated_without_an_estimate_is_refused_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log_submissions(tmp_path / "outputs", 0.35, n=2)
    assert main([]) == 0
    with pytest.raises(ConfigError, match=r"holds no estimate \(2 submissions with part scores; record at least 3\)"):
        load_settings("EASE", overrides=["valid_metric=recall@10 calibrated"])


@pytest.fixture(scope="module")
def parts_case(tmp_path_factory):
    """Member A holds each user's three random-part items in its top 10, member B only the last item (its top
    item): a blend cannot have both, so what it gives up follows the last part's share."""
    hidden, a, b, _, interactions = last_item_case()
    root = tmp_path_factory.mktemp("parts")
    data = write_data(root / "data", interactions, hidden)
    parts = [(u, i, 0, "last" if i == b[u][0] else "random") for u, items in hidden.items() for i in sorted(items)]
    pd.DataFrame(parts, columns=["user", "item", "time", "part"]).to_csv(data / "holdout.csv", index=False)
    runs = [blend_run(root / "A", data, a, a), blend_run(root / "B", data, b, b, model="SASRec")]
    for run in runs:  # the holdout the runs were trained with, as a run's summary records it
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "config": {"holdout": {"last": 1, "random": 3}}}))
    return root, [str(run) for run in runs]


def test_a_blend_objective_uses_the_share_it_prints(parts_case, monkeypatch, capsys):
    root, runs = parts_case
    monkeypatch.chdir(root)
    (root / "outputs").mkdir(exist_ok=True)
    estimate = {"board": "public", "last_share": 0.9, "interval": [0.8, 1.0], "submissions": 3}
    (root / "outputs" / "leaderboard.json").write_text(json.dumps({"calibration": estimate}))
    summaries = {}
    for objective in ("recall@10 last:0.1", "recall@10 last:0.9", "recall@10 calibrated"):
        output = root / objective.replace(" ", "-")
        assert ensemble_main([*runs, "--method", "score", "--objective", objective, "--output", str(output)]) == 0
        summaries[objective] = json.loads((output / "summary.json").read_text())
    printed = capsys.readouterr()
    assert "--objective: recall@10 last:0.1: the last part's share 0.1 (given)" in printed.err
    assert "--objective: recall@10 calibrated: the last part's share 0.9 (95% interval 0.80 to 1.00" in printed.err
    # the runs' holdout has 1 latest item of 4 per user: 0.9 means about 4, 0.1 about none. Given, 0.9 is used with
    # a caution; estimated, it is used as far as the holdout measures it: 1 of 4
    assert printed.err.count("caution: ") == 1
    assert (
        "caution: recall@10 last:0.9 means about 4 of 4 hidden items per user are latest ones, more than the "
        in printed.err
    )
    assert "using recall@10 last:0.25, the share the holdout measures; the matching holdout measures 0.9" in printed.err
    low, high, estimated = (summaries[o] for o in summaries)
    assert high["config"]["objective"] == "recall@10 last:0.9" and low["config"]["objective"] == "recall@10 last:0.1"
    assert estimated["config"]["objective"] == "recall@10 last:0.25"
    assert "chosen for recall@10 last:0.9: cross-fitted" in printed.out
    parts = {share: s["holdout_detail"]["parts"] for share, s in (("low", low), ("high", high))}
    assert parts["high"]["last"]["recall@10"] > parts["low"]["last"]["recall@10"]
    assert parts["high"]["random"]["recall@10"] < parts["low"]["random"]["recall@10"]
    assert high["weights"]["B"] > low["weights"]["B"]


def test_the_stage_weighs_each_hidden_item_by_its_parts_share():
    parts = ["last", "random", "random", "last", "random"]
    hidden = pd.DataFrame({"user": [1, 1, 1, 2, 2], "item": [5, 6, 7, 5, 8], "part": parts})
    table = pd.DataFrame({"user": [1, 1, 1, 2, 2], "item": [5, 6, 9, 8, 9]})
    weights = part_weights(table, hidden, Objective("recall@10", share=0.5))
    # per user: one last item, 1.5 random ones: a last item is worth 0.5 / 1, a random one 0.5 / 1.5;
    # the hidden candidates (5 last, 6 and 8 random) scaled to a mean of 1; the others 1
    worth = np.array([0.5, 0.5 / 1.5, 0.5 / 1.5])
    assert weights.tolist() == pytest.approx([*(worth / worth.mean())[:2], 1.0, (worth / worth.mean())[2], 1.0])
    assert part_weights(table, hidden, Objective("recall@10")).tolist() == [1.0] * 5


def test_a_log_written_before_the_parts_were_recorded_is_listed_without_an_estimate(tmp_path, capsys):
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    old = "run,model,fingerprint,recall@10,ci low,ci high,ndcg@10,public,private,recorded\n"
    old += "".join(f"/r/{i},EASE,fp-1,0.{20 + i},,,0.1,0.1{i},,2026-01-01\n" for i in range(3))
    (outputs / "leaderboard.csv").write_text(old)
    assert main(["--outputs", str(outputs)]) == 0
    assert "public latest-item share: cannot tell (0 submissions with part scores; record at least 3)" in (
        capsys.readouterr().out
    )
