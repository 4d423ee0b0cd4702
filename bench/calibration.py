"""The leaderboard calibration on simulated boards: is the board's share of latest items found, and does a
blend chosen for it score higher on the board than one chosen on the default holdout?

    python bench/calibration.py [--data [embedded latest-small]] [--boards 5+5 1+9] [--epochs 10]
                                [--latest-small DIR]

For each data set (the embedded MovieLens-100K; MovieLens ml-latest-small from ../shared/data) and each
board make-up LAST+RANDOM, a board set is hidden from the raw interactions before anything trains: for
every user with at least MIN_INTERACTIONS, the LAST latest interactions and RANDOM random earlier ones
(seed 0); the board's true share of latest items is LAST / (LAST + RANDOM). On the rest, with movierec's
default holdout (2 last + 8 random): EASE, MultiVAE and gSASRec (their quick settings, at most --epochs
epochs; gSASRec stops early on the holdout's last part, as the blend recipe's sequential members do), and
their score blend with the default objective (recall@10). Each submission is scored on the board as the
leaderboard scores it (Recall@10 over the board's users) and logged with that public score
(`python -m recbole_ext.leaderboard add`); the listing's estimate is printed against the true share, with
each submission's board score over its holdout mix at the true share (1 where the board is a resampled
holdout). Then the same members are blended with `--objective "recall@10 calibrated"` (the share just
estimated) and with the true share (what a perfect estimate would give); their board scores are printed
with paired intervals against the recall@10 blend (the board's users resampled). Runs are kept and
reused: data/bench/calibration/.

The intervals' coverage: boards simulated by resampling the users of each case (RESAMPLES, no
retraining), the holdout's part means over all its users (as logged) or over the board's users (as in
the competition, where the boards score the holdout's users), and synthetic boards (synthetic_board,
also run by `--data` with no name) where the truth is known: resampled holdouts, and boards where one
submission scores 0.9 or 0.75 times its holdout chances. Three rules: the listing's (the F test on the
residuals), the users' sampling noise alone (chi-square), and the sampling noise where the chi-square test
finds the residuals within it, else the F test.

Goals (issue 27), printed beside the figures: the true share inside the estimate's interval in every
case, the interval at most 0.3 wide with 4 submissions; the calibrated blend at least the default one on
the board in every case, higher where the true share is far from the default holdout's 0.2.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import BENCH_DATA, LATEST_SMALL, ROOT, latest_small_raw, model_settings, table

OUT = BENCH_DATA / "calibration"
MIN_INTERACTIONS = 40  # board (10) + holdout (at most 10) + enough left to train on
QUIET = ["state=WARNING", "show_progress=false", "device=cpu"]
MEMBERS = {  # name: (model yaml, settings)
    "EASE": ("yaml/ease.yaml", []),
    "MultiVAE": ("yaml/multivae.yaml", []),
    "gSASRec": ("yaml/gsasrec.yaml", ["valid_metric=recall@10 last", "stopping_step=3"]),
}
DEFAULT_SHARE = 0.2  # the default holdout's: 2 last of 10
# part recalls of four kinds of submission on the synthetic boards: EASE-like, sequential, VAE-like, a blend
SYNTHETIC_LAST = np.array([0.10, 0.27, 0.18, 0.14])
SYNTHETIC_RANDOM = np.array([0.30, 0.12, 0.24, 0.28])
RESAMPLES = 500  # simulated boards per case for the intervals' coverage
SYNTHETIC_BOARDS = 200  # per synthetic case
VIEWS = ("all holdout users", "board users")  # the users of the holdout's part means (coverage)
# the interval rules compared: the listing's (F test on the residuals), the users' sampling noise alone (a
# chi-square interval), and that one where the chi-square test finds the residuals within the noise
RULES = ("residuals (F test)", "sampling noise", "sampling noise if the test passes")


def source_raw(name, latest_small):
    """The raw competition folder of a data set, or None when it is not here."""
    from atomic_data import base_settings
    from atomic_data.movielens import embedded_default

    if name == "embedded":
        return embedded_default(ROOT / base_settings()["data_dir"])
    return latest_small_raw(latest_small)


def hide_board(raw, folder, last, random):
    """folder/raw: raw without the board set; folder/board.csv: the board (user, item, part)."""
    from atomic_data.raw import RATINGS_FILE, SIDE_FILES, read_ratings
    from atomic_data.tables import write_table

    if (folder / "board.csv").is_file():
        return pd.read_csv(folder / "board.csv")
    ratings = pd.DataFrame(read_ratings(raw))
    ratings = ratings.sort_values(["user", "time"], kind="stable")  # file order breaks ties
    rng = np.random.default_rng(0)
    board = []
    for user, rows in ratings.groupby("user", sort=True):
        if len(rows) >= MIN_INTERACTIONS:
            earlier = rows.index[: len(rows) - last]
            board += [(user, i, "last") for i in rows.index[len(rows) - last :]]
            board += [(user, i, "random") for i in rng.choice(earlier, random, replace=False)]
    hidden = pd.DataFrame(board, columns=["user", "row", "part"])
    rest = ratings.drop(index=hidden["row"]).sort_index()
    (folder / "raw").mkdir(parents=True, exist_ok=True)
    write_table(folder / "raw" / RATINGS_FILE, ["user", "item", "time"], [rest[c].to_numpy() for c in rest], sep=",")
    for filename in SIDE_FILES:
        if (Path(raw) / filename).is_file():
            shutil.copyfile(Path(raw) / filename, folder / "raw" / filename)
    hidden = hidden.assign(item=ratings.loc[hidden["row"], "item"].to_numpy())[["user", "item", "part"]]
    hidden.to_csv(folder / "board.csv", index=False)
    return hidden


def board_users(run, board):
    """Each board user's Recall@10 of a run's submission.csv: a Series by user."""
    from recbole_ext.metrics import RECALL, user_scores

    top = pd.read_csv(Path(run) / "submission.csv")
    return user_scores(top.assign(rank=top.groupby("user").cumcount()), board)[RECALL]


def board_score(run, board):
    """The leaderboard's Recall@10 of a run's submission.csv on the board."""
    return float(board_users(run, board).mean())


def rule_intervals(means, parts):
    """{rule: ((low, high), whether it came from the users' sampling noise)} of RULES for one board: means the
    submissions' holdout part means and board scores, parts their per-user holdout part recalls."""
    from recbole_ext import calibration

    estimate = calibration.fit_share(*means, user_scores=parts)
    mixes = np.outer(calibration.GRID, means[0]) + np.outer(1 - calibration.GRID, means[1])
    chi2, _ = calibration.sampling_fit(means[2] - mixes, calibration.noise_covariance(*parts))
    inside = calibration.GRID[chi2 <= chi2.min() + stats.chi2.ppf(calibration.LEVEL, 1)]
    sampling = ((inside.min(), inside.max()), True)
    passes = estimate.noise_p >= 1 - calibration.LEVEL
    residuals = (estimate.interval, False)
    return {RULES[0]: residuals, RULES[1]: sampling, RULES[2]: sampling if passes else residuals}


def level_on_board(run, board, share):
    """A run's board score over its holdout mix at the true share, the holdout's parts over the board's users:
    1 where the board is a resampled holdout."""
    from recbole_ext import calibration
    from recbole_ext.run_folder import read_holdout_users

    parts = read_holdout_users(run).loc[np.sort(board["user"].unique()), [calibration.LAST, calibration.RANDOM]]
    return board_score(run, board) / (share * parts.iloc[:, 0].mean() + (1 - share) * parts.iloc[:, 1].mean())


def coverage_of(boards, true_share):
    """Per rule: the share of boards whose interval holds true_share, the mean width, the share from the noise.
    boards: (means, parts) of each simulated board."""
    found = {rule: [] for rule in RULES}
    for means, parts in boards:
        intervals = rule_intervals(means, parts)
        for rule in RULES:
            (low, high), used = intervals[rule]
            found[rule].append((low <= true_share <= high, high - low, used))
    return {rule: np.mean(values, axis=0) for rule, values in found.items()}


def coverage(runs, board, true_share, board_users_only, resamples=RESAMPLES):
    """coverage_of boards simulated by resampling users (the same draw for the holdout and the board: the
    competition's boards score every user). The holdout's part means are over all its users (what the log
    records) or, board_users_only, over the board's users (the competition's case)."""
    from recbole_ext import calibration
    from recbole_ext.run_folder import read_holdout_users

    tables = [read_holdout_users(run) for run in runs]
    users = np.sort(board["user"].unique()) if board_users_only else tables[0].index
    parts = [np.column_stack([t.loc[users, part] for t in tables]) for part in (calibration.LAST, calibration.RANDOM)]
    on_board = np.column_stack([board_users(run, board).reindex(users).to_numpy() for run in runs])
    rng = np.random.default_rng(0)
    boards = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(users), len(users))
        resampled = (parts[0][drawn], parts[1][drawn], on_board[drawn])
        boards.append(([np.nanmean(values, axis=0) for values in resampled], resampled[:2]))  # NaN: not on the board
    return coverage_of(boards, true_share)


def synthetic_board(share, seed, users=600, shifted=None):
    """Per-user holdout part recalls (2 last + 8 random items) of four kinds of submission, and their board
    recalls (5 items, 5 x share of them latest), from the same per-user chances: a resampled holdout with
    that share of latest items, except the submissions of shifted ({index: level}), whose board chances are
    level times their holdout's. A user's ease scales all their chances; an item is found by every submission
    whose chance is above its draw (similar models find the same items). Returns ((last, random, board
    means), (last, random per user))."""
    rng = np.random.default_rng(seed)
    ease = rng.gamma(2.0, 0.5, (users, 1))
    levels = np.ones(len(SYNTHETIC_LAST))
    for index, level in (shifted or {}).items():
        levels[index] = level

    def recalls(chances, items):
        draws = rng.random((users, items, 1))
        return (draws < np.minimum(1, ease * chances)[:, None, :]).mean(axis=1)

    board_last = round(5 * share)
    last, random = recalls(SYNTHETIC_LAST, 2), recalls(SYNTHETIC_RANDOM, 8)
    on_board = board_last * recalls(SYNTHETIC_LAST * levels, board_last) if board_last else 0
    on_board = (on_board + (5 - board_last) * recalls(SYNTHETIC_RANDOM * levels, 5 - board_last)) / 5
    return [values.mean(axis=0) for values in (last, random, on_board)], (last, random)


def synthetic_coverage(boards=SYNTHETIC_BOARDS):
    """coverage_of synthetic boards: resampled holdouts, and boards where the sequential-like submission scores
    0.9 or 0.75 times its holdout chances."""
    rows = []
    for name, shifted in (("resampled holdout", None), ("one at 0.9", {1: 0.9}), ("one at 0.75", {1: 0.75})):
        for share in (0.2, 0.6):
            found = coverage_of([synthetic_board(share, seed, shifted=shifted) for seed in range(boards)], share)
            rows += [[name, share, rule, *(f"{v:.2f}" for v in values)] for rule, values in found.items()]
    return rows


def train(folder, epochs):
    """The members' run folders on folder/raw (trained once, then reused)."""
    from recbole_ext.pipeline import run

    runs = {}
    for name, (model_yaml, extra) in MEMBERS.items():
        runs[name] = folder / "runs" / name
        if not (runs[name] / "summary.json").is_file():
            shutil.rmtree(runs[name], ignore_errors=True)
            epochs_setting = [] if name == "EASE" else [f"epochs={epochs}"]
            overrides = [f"data={folder / 'raw'}", f"data_dir={OUT / 'prepared'}", f"output_dir={runs[name]}"]
            run(model_settings(model_yaml, [*overrides, *QUIET, *epochs_setting, *extra], quick=True))
    return runs


def blend(runs, folder, name, objective):
    from recbole_ext import ensemble

    output = folder / "blends" / name
    if not (output / "summary.json").is_file():
        shutil.rmtree(output, ignore_errors=True)
        ensemble.build([str(r) for r in runs.values()], "score", "auto", output=output, objective=objective)
    return output, json.loads((output / "summary.json").read_text())


def measure_case(data_name, raw, last, random, epochs):
    from recbole_ext import calibration, leaderboard
    from recbole_ext.metrics import COMPETITION, RECALL, Objective, paired_differences

    folder = OUT / data_name / f"board-{last}+{random}"
    board = hide_board(raw, folder, last, random)
    runs = train(folder, epochs)
    default_blend, weights = blend(runs, folder, "default", COMPETITION)
    outputs = folder / "outputs"
    shutil.rmtree(outputs, ignore_errors=True)
    scores = {}
    for name, run in {**runs, "blend (recall@10)": default_blend}.items():
        scores[name] = board_score(run, board)
        leaderboard.main(["add", str(run), "--public", f"{scores[name]:.6f}", "--outputs", str(outputs)])
    leaderboard.main(["--outputs", str(outputs)])
    estimate = json.loads((outputs / leaderboard.ESTIMATE_FILE).read_text())["calibration"]
    objective = calibration.resolved_objective(
        "recall@10 calibrated", "bench", estimate_file=outputs / leaderboard.ESTIMATE_FILE
    )
    true_share = Objective(RECALL, share=round(last / (last + random), 2))  # what a perfect estimate would give
    blends = {
        "blend (recall@10)": (default_blend, weights),
        "blend (calibrated)": blend(runs, folder, f"calibrated-{objective.share:g}", objective),
        "blend (true share)": blend(runs, folder, f"true-{true_share.share:g}", true_share),
    }
    per_user = pd.DataFrame({name: board_users(run, board) for name, (run, _) in blends.items()})
    logged = {**runs, "blend (recall@10)": default_blend}
    scores.update(per_user.mean().to_dict())
    return {
        "data": data_name,
        "board": f"{last}+{random}",
        "users": board["user"].nunique(),
        "true share": last / (last + random),
        "estimate": estimate,
        "scores": scores,
        "weights": {name: summary.get("weights") for name, (_, summary) in blends.items()},
        "gains": paired_differences(per_user, "blend (recall@10)"),
        "levels": {name: level_on_board(run, board, true_share.share) for name, run in logged.items()},
        "coverage": {
            view: coverage([*runs.values(), default_blend], board, last / (last + random), view == "board users")
            for view in VIEWS
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", nargs="*", default=["embedded", "latest-small"], help="none: the synthetic study only"
    )
    parser.add_argument("--boards", nargs="+", default=["5+5", "1+9"], help="LAST+RANDOM per user")
    parser.add_argument("--epochs", type=int, default=10, help="at most this many epochs for MultiVAE and gSASRec")
    parser.add_argument("--latest-small", default=str(LATEST_SMALL))
    args = parser.parse_args()
    results = []
    for data_name in args.data:
        raw = source_raw(data_name, args.latest_small)
        if raw is None:
            print(f"{data_name}: not at {args.latest_small}; skipped")
            continue
        for board in args.boards:
            last, random = (int(n) for n in board.split("+"))
            results.append(measure_case(data_name, raw, last, random, args.epochs))
    if results:
        report(results)
    print(f"\ncoverage of the 95% interval on {SYNTHETIC_BOARDS} synthetic boards per row (synthetic_board)")
    print(table(synthetic_coverage(), ["board", "true a", "interval", "coverage", "mean width", "from the noise"]))


def report(results):
    rows, goals, covered, blends = [], [], [], []
    for r in results:
        e, s, case = r["estimate"], r["scores"], [r["data"], r["board"], f"{r['true share']:.2f}"]
        low, high = e["interval"] or (np.nan, np.nan)
        inside = e["last_share"] is not None and low <= r["true share"] <= high
        gain, gain_low, gain_high = r["gains"]["blend (calibrated)"]
        rows.append(
            [
                *case[:2],
                r["users"],
                case[2],
                "cannot tell" if e["last_share"] is None else f"{e['last_share']:.2f} ({low:.2f} to {high:.2f})",
                "" if e["sampling_noise"] is None else f"{e['sampling_noise']['chi2_p']:.3f}",
                *(f"{s[name]:.4f}" for name in ("EASE", "MultiVAE", "gSASRec", "blend (recall@10)")),
                " ".join(f"{level:.2f}" for level in r["levels"].values()),
            ]
        )
        for view, rules in r["coverage"].items():
            for rule, (share_covered, width, used) in rules.items():
                covered.append([*case, view, rule, f"{share_covered:.2f}", f"{width:.2f}", f"{used:.2f}"])
        for name, weights in r["weights"].items():
            mean, paired = s[name], r["gains"].get(name)
            shown = "" if paired is None else f"{paired[0]:+.4f} ({paired[1]:+.4f} to {paired[2]:+.4f})"
            blends.append([*case, name, " ".join(f"{w:.2f}" for w in (weights or {}).values()), f"{mean:.4f}", shown])
        goals.append(
            f"{r['data']} {r['board']}: true share inside the interval: {'yes' if inside else 'NO'}; width "
            f"{high - low:.2f} (goal <= 0.30 with {e['submissions']} submissions): "
            f"{'yes' if high - low <= 0.3 else 'NO'}; calibrated blend >= default: {'yes' if gain >= 0 else 'NO'} "
            f"({gain:+.4f}, paired 95% {gain_low:+.4f} to {gain_high:+.4f})"
            + (f", higher: {'yes' if gain_low > 0 else 'NO'}" if abs(r["true share"] - DEFAULT_SHARE) >= 0.2 else "")
        )
    header = ["data", "board", "users", "true a", "estimated a (95%)", "noise p"]
    print(table(rows, [*header, "EASE", "MultiVAE", "gSASRec", "blend recall@10", "board / mix at true a"]))
    print(f"\ncoverage of the 95% interval on {RESAMPLES} boards simulated by resampling the users")
    print(
        table(
            covered,
            ["data", "board", "true a", "holdout parts of", "interval", "coverage", "mean width", "from the noise"],
        )
    )
    print("\nthe blends on the board (weights: EASE MultiVAE gSASRec; paired against the recall@10 blend)")
    print(table(blends, ["data", "board", "true a", "blend", "weights", "board recall@10", "paired difference"]))
    print("\n".join(goals))


if __name__ == "__main__":
    main()
