"""The tables bench/calibration.py prints: the estimate against the true share, the fit on each variant of
the holdout's parts, the intervals' coverage, the blends on the board, the goals, and the second round."""

import numpy as np

from bench.calibration_boards import PARTS, RESAMPLES
from bench.common import table

DEFAULT_SHARE = 0.2  # the default holdout's: 2 last of 10
MEMBER_NAMES = ("EASE", "MultiVAE", "gSASRec", "blend (recall@10)")


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
                *(f"{s[name]:.4f}" for name in MEMBER_NAMES),
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


def report_second_round(results):
    rows, blends = [], []
    for r in results:
        second, case = r["round 2"], [r["data"], r["board"], f"{r['true share']:.2f}"]
        rounds = (
            ("1 (2+8)", r["estimate"], r["scores"], r["levels"][PARTS[1]]),
            (f"2 ({second['holdout']})", *(second[k] for k in ("estimate", "scores", "levels"))),
        )
        for name, e, scores, ratios in rounds:
            low, high = e["interval"] or (np.nan, np.nan)
            estimate = "cannot tell" if e["last_share"] is None else f"{e['last_share']:.2f} ({low:.2f} to {high:.2f})"
            weights = " ".join(f"{n} {w:.2f}" for n, w in (e["weights"] or {}).items())
            board = (f"{scores[member]:.4f}" for member in MEMBER_NAMES)
            ratios = " ".join(f"{ratio:.2f}" for ratio in ratios)
            rows.append([*case, name, *board, ratios, estimate, "" if np.isnan(low) else f"{high - low:.2f}", weights])
        mean = second["scores"]["blend (recall@10)"]
        weights = " ".join(f"{w:.2f}" for w in (second["weights"] or {}).values())
        for name, (gain, low, high) in second["against"].items():
            blends.append(
                [*case, second["holdout"], weights, f"{mean:.4f}", name, f"{gain:+.4f} ({low:+.4f} to {high:+.4f})"]
            )
    print("\nround 2: the members retrained on the suggested holdout, their board scores and board / mix at the true a")
    print("(board-like parts: EASE MultiVAE gSASRec blend), and the listing's estimate from their own log of 4")
    print("submissions, with the fit's weight of each")
    header = ["data", "board", "true a", "round (holdout)", "EASE", "MultiVAE", "gSASRec", "blend recall@10"]
    print(table(rows, [*header, "board / mix", "the listing's a (95%)", "width", "fit weights"]))
    print("\nthe round-2 blend (recall@10 on its holdout) on the board, paired against round 1's blends")
    print(table(blends, ["data", "board", "true a", "holdout", "weights", "board recall@10", "against", "difference"]))
