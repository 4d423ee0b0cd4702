"""The leaderboard calibration on simulated boards: is the board's share of latest items found, and does a
blend chosen for it score higher on the board than one chosen on the default holdout?

    python bench/calibration.py [--data [embedded latest-small]] [--boards 5+5 1+9] [--epochs 10]
                                [--latest-small DIR]

For each data set (the embedded MovieLens-100K; MovieLens ml-latest-small from ../shared/data) and each
board make-up LAST+RANDOM, a board set is hidden from the raw interactions before anything trains: for
every user with at least MIN_INTERACTIONS, the LAST latest interactions and RANDOM random earlier ones
(seed 0); the board's true share of latest items is LAST / (LAST + RANDOM). Lighter users are left out of
the data (the competition's boards score every user: every holdout user is a board user; until
2026-12-07 they stayed, so the holdout's part means were over other users than the board's). On the
rest, with movierec's default holdout (2 last + 8 random): EASE, MultiVAE and gSASRec (their quick
settings, at most --epochs epochs; gSASRec stops early on the holdout's last part, as the blend recipe's
sequential members do), and their score blend with the default objective (recall@10). Each submission
is scored on the board as the leaderboard scores it (Recall@10 over the board's users) and logged with
that public score (`python -m recbole_ext.leaderboard add`); the listing's estimate (the holdout's parts
board-like: evaluator/slots.py) is printed against the true share, beside the fits on the parts as
logged (the listing's until 2026-12-07) and cut at 10 + 10 x the board score (the first model of the
slot effect, not adopted), with each submission's board score over its holdout mix at the true share
(1 where the board is a resampled holdout) for each. Then the same members are blended with
`--objective "recall@10 calibrated"` (the share just estimated) and with the true share (what a perfect
estimate would give); their board scores are printed with paired intervals against the recall@10 blend
(the board's users resampled). Runs are kept and reused: data/bench/calibration/.

The intervals' coverage: boards simulated by resampling the users of each case (RESAMPLES, no
retraining), for each variant of the parts, and synthetic boards (also run by `--data` with no name)
where the truth is known: synthetic_board (resampled holdouts, and boards where one submission scores
0.9 or 0.75 times its holdout chances) and synthetic_slot_board (ranked lists with the slot effect, for
each variant of the parts). Three rules: the F test on the residuals, the users' sampling noise alone
(chi-square), and the span of both (the listing's).

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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.calibration_boards import (
    PARTS,
    RESAMPLES,
    SYNTHETIC_BOARDS,
    board_score,
    board_users,
    coverage,
    fit_of,
    levels,
    part_tables,
    synthetic_coverage,
    synthetic_slot_coverage,
)
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


def source_raw(name, latest_small):
    """The raw competition folder of a data set, or None when it is not here."""
    from atomic_data import base_settings
    from atomic_data.movielens import embedded_default

    if name == "embedded":
        return embedded_default(ROOT / base_settings()["data_dir"])
    return latest_small_raw(latest_small)


def hide_board(raw, folder, last, random):
    """folder/raw: raw without the board set and without the users too light for one (the competition's boards
    score every user, so every holdout user is a board user); folder/board.csv: the board (user, item, part)."""
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
    rest = rest[rest["user"].isin(hidden["user"])]
    (folder / "raw").mkdir(parents=True, exist_ok=True)
    write_table(folder / "raw" / RATINGS_FILE, ["user", "item", "time"], [rest[c].to_numpy() for c in rest], sep=",")
    for filename in SIDE_FILES:
        if (Path(raw) / filename).is_file():
            shutil.copyfile(Path(raw) / filename, folder / "raw" / filename)
    hidden = hidden.assign(item=ratings.loc[hidden["row"], "item"].to_numpy())[["user", "item", "part"]]
    hidden.to_csv(folder / "board.csv", index=False)
    return hidden


def train(folder, epochs):
    """The members' run folders on folder/raw (trained once, then reused)."""
    from recbole_ext.quick_start.pipeline import run

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
    from recbole_ext.blend import ensemble

    output = folder / "blends" / name
    if not (output / "summary.json").is_file():
        shutil.rmtree(output, ignore_errors=True)
        ensemble.build([str(r) for r in runs.values()], "score", "auto", output=output, objective=objective)
    return output, json.loads((output / "summary.json").read_text())


def measure_case(data_name, raw, last, random, epochs):
    from recbole_ext import leaderboard
    from recbole_ext.evaluator import calibration
    from recbole_ext.evaluator.metrics import COMPETITION, RECALL, Objective, paired_differences

    folder = OUT / data_name / f"board-{last}+{random}-every-user"
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
    scores.update(per_user.mean().to_dict())
    tables = part_tables([*runs.values(), default_blend], board)
    return {
        "data": data_name,
        "board": f"{last}+{random}",
        "users": board["user"].nunique(),
        "true share": last / (last + random),
        "estimate": estimate,
        "scores": scores,
        "weights": {name: summary.get("weights") for name, (_, summary) in blends.items()},
        "gains": paired_differences(per_user, "blend (recall@10)"),
        "fits": {variant: fit_of(*table) for variant, table in tables.items()},
        "levels": {variant: levels(*table, true_share.share) for variant, table in tables.items()},
        "coverage": {variant: coverage(*table, last / (last + random)) for variant, table in tables.items()},
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
    print(f"\nthe same on {SYNTHETIC_BOARDS // 2} synthetic boards with the slot effect per row (synthetic_slot_board)")
    print(
        table(
            synthetic_slot_coverage(),
            ["holdout parts", "true a", "interval", "coverage", "mean width", "from the noise"],
        )
    )


def report(results):
    rows, fits, goals, covered, blends = [], [], [], [], []
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
            ]
        )
        for variant in PARTS:
            fit = r["fits"][variant]
            fits.append(
                [
                    *case,
                    variant,
                    "{:.2f} ({:.2f} to {:.2f})".format(fit.last_share, *fit.interval),
                    f"{fit.interval[1] - fit.interval[0]:.2f}",
                    f"{np.sqrt(np.mean(fit.residuals**2)):.4f}",
                    f"{fit.noise_p:.3f}",
                    " ".join(f"{level:.2f}" for level in r["levels"][variant]),
                ]
            )
            for rule, (share_covered, width, used) in r["coverage"][variant].items():
                covered.append([*case, variant, rule, f"{share_covered:.2f}", f"{width:.2f}", f"{used:.2f}"])
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
    header = ["data", "board", "users", "true a", "the listing's a (95%)", "noise p", "EASE", "MultiVAE", "gSASRec"]
    print(table(rows, [*header, "blend recall@10"]))
    print("\nthe fit on each variant of the holdout's parts (board / mix at the true a: EASE MultiVAE gSASRec blend)")
    print(
        table(fits, ["data", "board", "true a", "holdout parts", "a (95%)", "width", "rms", "noise p", "board / mix"])
    )
    print(f"\ncoverage of the 95% interval on {RESAMPLES} boards simulated by resampling the users")
    print(
        table(
            covered,
            ["data", "board", "true a", "holdout parts", "interval", "coverage", "mean width", "from the noise"],
        )
    )
    print("\nthe blends on the board (weights: EASE MultiVAE gSASRec; paired against the recall@10 blend)")
    print(table(blends, ["data", "board", "true a", "blend", "weights", "board recall@10", "paired difference"]))
    print("\n".join(goals))


if __name__ == "__main__":
    main()
