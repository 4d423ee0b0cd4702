"""The leaderboard calibration on simulated boards: is the board's share of latest items found, and does a
blend chosen for it score higher on the board than one chosen on the default holdout?

    python bench/calibration.py [--data [embedded latest-small]] [--boards 5+5 1+9] [--epochs 10]
                                [--latest-small DIR] [--second-round]

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
`--objective "recall@10 calibrated"` (the share just estimated, used as far as the 2 + 8 holdout measures
it: evaluator/slots.py, measurable) and with the true share as given (what a perfect estimate would
give); their board scores are printed with paired intervals against the recall@10 blend (the board's
users resampled). Runs are kept and reused: data/bench/calibration/<data>/board-LAST+RANDOM-
every-user-<epochs>-epochs/.

--second-round (the competitor's loop, round 2): after round 1 the listing suggests a holdout; the same
members are retrained on it (holdout.last / holdout.random; gSASRec stops early on the whole holdout where
it has no last part), blended with the default objective on it, scored on the board and logged in a log of
their own (folder round-2-LAST+RANDOM); printed: the round-2 estimate beside round 1's, and the round-2
blend on the board paired against round 1's recall@10 and calibrated blends. The synthetic study is not run.

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
from bench.calibration_report import report, report_second_round
from bench.common import BENCH_DATA, LATEST_SMALL, ROOT, latest_small_raw, model_settings, table

OUT = BENCH_DATA / "calibration"
MIN_INTERACTIONS = 40  # board (10) + holdout (at most 10) + enough left to train on
QUIET = ["state=WARNING", "show_progress=false", "device=cpu"]
MEMBERS = {  # name: (model yaml, settings)
    "EASE": ("yaml/ease.yaml", []),
    "MultiVAE": ("yaml/multivae.yaml", []),
    "gSASRec": ("yaml/gsasrec.yaml", ["valid_metric=recall@10 last", "stopping_step=3"]),
}


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


def train(folder, epochs, holdout=None, raw=None):
    """The members' run folders under folder on raw (folder/raw), trained once, then reused; holdout:
    {last, random} over base.yaml's (gSASRec stops early on all of it where there is no last part)."""
    from recbole_ext.quick_start.pipeline import run

    runs, raw = {}, raw or folder / "raw"
    holdout_settings = [f"holdout.{part}={n}" for part, n in (holdout or {}).items()]
    for name, (model_yaml, extra) in MEMBERS.items():
        runs[name] = folder / "runs" / name
        if not (runs[name] / "summary.json").is_file():
            shutil.rmtree(runs[name], ignore_errors=True)
            epochs_setting = [] if name == "EASE" else [f"epochs={epochs}"]
            if holdout and not holdout["last"]:
                extra = [setting for setting in extra if not setting.startswith("valid_metric")]
            overrides = [f"data={raw}", f"data_dir={OUT / 'prepared'}", f"output_dir={runs[name]}", *holdout_settings]
            run(model_settings(model_yaml, [*overrides, *QUIET, *epochs_setting, *extra], quick=True))
    return runs


def blend(runs, folder, name, objective):
    from recbole_ext.blend import ensemble

    output = folder / "blends" / name
    if not (output / "summary.json").is_file():
        shutil.rmtree(output, ignore_errors=True)
        ensemble.build([str(r) for r in runs.values()], "score", "auto", output=output, objective=objective)
    return output, json.loads((output / "summary.json").read_text())


def logged(runs, board, outputs):
    """Each run's board score, logged with it as its public score in a new log at outputs, and the listing's
    estimate from that log: (scores by name, the estimate as leaderboard.json holds it)."""
    from recbole_ext import leaderboard

    shutil.rmtree(outputs, ignore_errors=True)
    scores = {}
    for name, run in runs.items():
        scores[name] = board_score(run, board)
        leaderboard.main(["add", str(run), "--public", f"{scores[name]:.6f}", "--outputs", str(outputs)])
    leaderboard.main(["--outputs", str(outputs)])
    return scores, json.loads((outputs / leaderboard.ESTIMATE_FILE).read_text())["calibration"]


def second_round(case, folder, board, epochs):
    """Round 2 of the competitor's loop: the members retrained on the holdout the round-1 listing suggested,
    blended with the default objective (recall@10) on it, scored on the board and logged (a log of their own:
    the listing's estimate on the matched holdout); the round-2 blend paired against round 1's blends."""
    from recbole_ext.evaluator.metrics import COMPETITION, paired_differences

    holdout = case["estimate"]["suggested_holdout"]
    round_folder = folder / f"round-2-{holdout['last']}+{holdout['random']}"
    runs = train(round_folder, epochs, holdout, raw=folder / "raw")
    second_blend, summary = blend(runs, round_folder, "default", COMPETITION)
    scores, estimate = logged({**runs, "blend (recall@10)": second_blend}, board, round_folder / "outputs")
    # a holdout of no last items (0 + 10) has no last part to set against the board
    board_like = part_tables([*runs.values(), second_blend], board)[PARTS[1]] if holdout["last"] else None
    round_one = {name: folder / "blends" / blend_folder for name, blend_folder in case["blend folders"].items()}
    per_user = pd.DataFrame(
        {
            **{f"round 1 {name}": board_users(run, board) for name, run in round_one.items()},
            "round 2 blend": board_users(second_blend, board),
        }
    )
    return {
        "holdout": f"{holdout['last']}+{holdout['random']}",
        "estimate": estimate,
        "scores": scores,
        "weights": summary.get("weights"),
        "levels": [] if board_like is None else levels(*board_like, case["true share"]),
        "against": {
            name: paired_differences(per_user[[name, "round 2 blend"]], name)["round 2 blend"]
            for name in per_user.columns[:-1]
        },
    }


def measure_case(data_name, raw, last, random, epochs, second=False):
    from recbole_ext import leaderboard
    from recbole_ext.evaluator import calibration
    from recbole_ext.evaluator.metrics import COMPETITION, RECALL, Objective, paired_differences

    # the members' epochs name the folder: its runs and blends are reused, and must not be another --epochs'
    folder = OUT / data_name / f"board-{last}+{random}-every-user-{epochs}-epochs"
    board = hide_board(raw, folder, last, random)
    runs = train(folder, epochs)
    default_blend, weights = blend(runs, folder, "default", COMPETITION)
    outputs = folder / "outputs"
    scores, estimate = logged({**runs, "blend (recall@10)": default_blend}, board, outputs)
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
    case = {
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
        "blend folders": {name: Path(run).name for name, (run, _) in blends.items() if name != "blend (true share)"},
    }
    if second:
        case["round 2"] = second_round(case, folder, board, epochs)
    return case


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", nargs="*", default=["embedded", "latest-small"], help="none: the synthetic study only"
    )
    parser.add_argument("--boards", nargs="+", default=["5+5", "1+9"], help="LAST+RANDOM per user")
    parser.add_argument("--epochs", type=int, default=10, help="at most this many epochs for MultiVAE and gSASRec")
    parser.add_argument("--latest-small", default=str(LATEST_SMALL))
    parser.add_argument(
        "--second-round",
        action="store_true",
        help="retrain the members on the holdout round 1 suggested, blend and score them (no synthetic study)",
    )
    args = parser.parse_args()
    results = []
    for data_name in args.data:
        raw = source_raw(data_name, args.latest_small)
        if raw is None:
            print(f"{data_name}: not at {args.latest_small}; skipped")
            continue
        for board in args.boards:
            last, random = (int(n) for n in board.split("+"))
            results.append(measure_case(data_name, raw, last, random, args.epochs, args.second_round))
    if results:
        report(results)
    if args.second_round:
        report_second_round(results)
        return
    print(f"\ncoverage of the 95% interval on {SYNTHETIC_BOARDS} synthetic boards per row (synthetic_board)")
    print(table(synthetic_coverage(), ["board", "true a", "interval", "coverage", "mean width", "from the noise"]))
    print(f"\nthe same on {SYNTHETIC_BOARDS // 2} synthetic boards with the slot effect per row (synthetic_slot_board)")
    print(
        table(
            synthetic_slot_coverage(),
            ["holdout parts", "true a", "interval", "coverage", "mean width", "from the noise"],
        )
    )


if __name__ == "__main__":
    main()
