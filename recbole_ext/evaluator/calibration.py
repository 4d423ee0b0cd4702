"""The board's share of latest items, estimated from the leaderboard log, and the objectives that read it.

A board score is close to a mix of the holdout's part recalls (docs/numbers.md):

    board ≈ a · recall@10 last + (1 - a) · recall@10 random

a the share of latest items in the hidden set (exactly so where every user
has the same number of hidden items). a is fitted by least squares over a
grid of [0, 1]; its 95% interval holds the shares whose fit is not worse than
the best's by the F test of one parameter (n - 1 degrees of freedom). Fewer
than MIN_SUBMISSIONS submissions, or parts too alike across them, cannot tell a.
Each submission weighs in the fit by its (last - random)² (board - random =
a · (last - random)): a submission whose parts score alike (a sequential
model as good at the latest items as at random ones) says nothing about a;
the listing names the heaviest and the half width one more like it would
give, the residuals' size unchanged.

Where the submissions' per-user holdout scores are known (each run's
holdout_users.csv), the residuals are also set against the noise of sampling
users (noise_covariance): a board score and a holdout mix are each a mean over
users, their errors correlated across submissions (the same users score all
of them). The interval then spans both: the F test's, which trusts residuals
that happen to be small (and submissions that are copies of each other), and
the sampling noise's (a chi-square interval), which misses a board where a
submission scores another multiple of its holdout parts than the others (on
simulated boards: bench/calibration.py, docs/numbers.md). A chi-square test
says whether the residuals are within that noise, and names the submission
with the largest standardised residual when they are not.

A diagnostic, not the estimate: the fit with a free level s (board ≈ s · mix),
and whether it fits significantly better than level 1 (a nested F test). A
free level trades against the share (a board at 0.63 times the holdout's
random part fits as well as one at level 1 with half latest items), so it
only says when the board is harder or easier than the holdout overall, and
the share is then less sure.

The listing (leaderboard.py) fits the holdout's parts scored as the board scores
where the run folders keep their validation lists (slots.py: the slot effect),
else the parts as logged, and writes the estimate to outputs/leaderboard.json; the objective
`recall@10 calibrated` (valid_metric, tune.metric, blend.objective) reads it
there and becomes `recall@10 last:<a>` (metrics.Objective).
"""

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

import yaml
from atomic_data import BASE_YAML
from recbole_ext import ConfigError
from recbole_ext.evaluator.metrics import CALIBRATED, LEVEL, RECALL, Objective, parse_objective
from recbole_ext.evaluator.slots import matching_holdout, measurable

LAST, RANDOM = f"{RECALL} last", f"{RECALL} random"
MIN_SUBMISSIONS = 3  # the diagnostic's two parameters (a, s) and one degree of freedom left to judge its fit
ALIKE = 0.02  # below this sine of the angle between the parts' score vectors, a is not identified
GRID = np.linspace(0, 1, 1001)
# each board (public, private) scores half of every user's hidden items: its sampling noise is counted as
# that of half the holdout's users with the holdout's items (an overstatement where users differ more than items)
BOARD_USER_SHARE = 0.5
BOARD_LIKE = "board-like (each item ranked without the user's other holdout items, cut at 10 + board score)"
ESTIMATE_FILE = Path("outputs") / "leaderboard.json"  # where the listing writes, where objectives read


@dataclass
class Calibration:
    """The share of latest items of one board (public or private) of one data version."""

    board: str
    submissions: int
    last_share: float | None = None  # None: cannot tell (reason says why)
    interval: tuple | None = None
    residuals: np.ndarray | None = None  # board score minus the fitted mix, per submission
    free_level: tuple | None = None  # (a, s) of the fit board ≈ s · mix: the diagnostic
    level_rejected: bool | None = None  # the free level fits significantly better than level 1
    names: list | None = None  # the submissions' names, for the listing
    noise_p: float | None = None  # the chi-square test's p of the residuals against the users' sampling noise
    parts_of_interval: tuple | None = None  # (the F test's, the sampling noise's): the interval spans both
    z_scores: np.ndarray | None = None  # each residual over its sampling noise's standard deviation
    weights: np.ndarray | None = None  # each submission's weight in the fit: its (last - random)² over the sum
    half_width: tuple | None = None  # the interval's half width (before clipping) now, and with one more
    # submission like the heaviest (the residuals' size unchanged)
    reason: str | None = None
    scores: tuple | None = None  # (last, random, board) per submission, as fitted
    parts: str = "as logged"  # or BOARD_LIKE: the holdout's parts scored as the board scores (evaluator/slots.py)

    def suggested_holdout(self, total=None):
        """holdout.last / holdout.random with the same total as base.yaml's holdout, the last part's share a."""
        if self.last_share is None:
            return None
        if total is None:
            holdout = yaml.safe_load(BASE_YAML.read_text())["holdout"]
            total = holdout["last"] + holdout["random"]
        return matching_holdout(self.last_share, total)

    def as_json(self):
        return {
            "board": self.board,
            "last_share": self.last_share,
            "interval": list(self.interval) if self.interval else None,
            "submissions": self.submissions,
            "suggested_holdout": self.suggested_holdout(),
            "free_level": None if self.free_level is None else dict(zip(("last_share", "level"), self.free_level)),
            "level_rejected": self.level_rejected,
            "rms_residual": None if self.residuals is None else float(np.sqrt(np.mean(self.residuals**2))),
            "sampling_noise": None
            if self.noise_p is None
            else {
                "chi2_p": self.noise_p,
                "z": dict(zip(self.names, self.z_scores.tolist())),
                "interval_of_residuals": list(self.parts_of_interval[0]),
                "interval_of_sampling_noise": list(self.parts_of_interval[1]),
            },
            "weights": None if self.weights is None else dict(zip(self.names, self.weights.tolist())),
            "half_width": None
            if self.half_width is None
            else dict(zip(("now", "one more like the heaviest"), self.half_width)),
            "cannot_tell": self.reason,
            "holdout_parts": self.parts,
        }

    def describe(self):
        """The estimate in words, for the listing."""
        head = f"{self.board} latest-item share"
        if self.last_share is None:
            return f"{head}: cannot tell ({self.reason})"
        low, high = self.interval
        worst = np.abs(self.residuals).max()
        holdout = self.suggested_holdout()
        share, level = self.free_level
        verdict = (
            f"rejects level 1 (F test): the board scores {'below' if level < 1 else 'above'} the mix ("
            f"{'harder' if level < 1 else 'easier'} than the holdout, for all or some submissions), so the share "
            "is less sure"
            if self.level_rejected
            else "level 1 not rejected"
        )
        return (
            (
                f"{head} {self.last_share:.2f} ({LEVEL:.0%} interval {low:.2f} to {high:.2f}, {self.submissions} "
                f"submissions): board ≈ {self.last_share:.2f} · {LAST} + {1 - self.last_share:.2f} · {RANDOM}, "
                f"residuals up to {worst:.4f} (rms {np.sqrt(np.mean(self.residuals**2)):.4f}); the matching holdout: "
                f"holdout.last: {holdout['last']}, holdout.random: {holdout['random']}; with a free level: "
                f"{level:.2f} × ({share:.2f} · last + {1 - share:.2f} · random), {verdict}"
            )
            + self._noise_words()
            + self._pinned_words()
            + f"; the holdout's parts: {self.parts}"
        )

    def _noise_words(self):
        if self.noise_p is None:
            return ""
        (f_low, f_high), (s_low, s_high) = self.parts_of_interval
        spans = (
            f"; the interval spans the residuals' (F test, {f_low:.2f} to {f_high:.2f}) and the users' sampling "
            f"noise's ({s_low:.2f} to {s_high:.2f})"
        )
        if self.noise_p >= 1 - LEVEL:
            return f"{spans}; the residuals are within that noise (chi-square p {self.noise_p:.2f})"
        most = int(np.abs(self.z_scores).argmax())
        return (
            f"{spans}; the residuals exceed that noise (chi-square p {self.noise_p:.3f}; most {self.names[most]}, "
            f"z {self.z_scores[most]:+.1f}): submissions score differently on the board than on the holdout beyond "
            "chance"
        )

    def _pinned_words(self):
        heaviest = int(self.weights.argmax())
        now, more = self.half_width
        return (
            f"; pinned down most by {self.names[heaviest]} (weight {self.weights[heaviest]:.2f}; a submission weighs "
            f"its (last - random)²): one more like it would narrow the F test's interval to about ±{more:.2f} (now "
            f"±{now:.2f})"
        )


def noise_covariance(user_last, user_random):
    """The covariance of the submissions' errors (board score minus mix) at every share of GRID: grid x n x n.

    user_last, user_random: users x submissions, each user's holdout part recalls (NaN where a user has no
    item in a part: the other part counts). A board score and a holdout mix are each a mean over users of
    per-user mixes; their errors are counted independent (the same users on both sides would make them
    agree, so this overstates the noise), the board's from BOARD_USER_SHARE of the holdout's users."""
    user_last, user_random = (np.asarray(values, dtype=float) for values in (user_last, user_random))
    user_last, user_random = (
        np.where(np.isnan(user_last), user_random, user_last),
        np.where(np.isnan(user_random), user_last, user_random),
    )
    users, n = user_last.shape
    joint = np.cov(np.hstack([user_last, user_random]), rowvar=False).reshape(2, n, 2, n)
    last_last, last_random, random_random = joint[0, :, 0], joint[0, :, 1], joint[1, :, 1]
    grid = GRID[:, None, None]
    spread = grid**2 * last_last + grid * (1 - grid) * (last_random + last_random.T) + (1 - grid) ** 2 * random_random
    return spread * (1 / users + 1 / (BOARD_USER_SHARE * users))


def _within(rss, degrees_of_freedom):
    """The residual sum of squares up to which a fit with one parameter fewer is not significantly worse."""
    return rss * (1 + stats.f.ppf(LEVEL, 1, degrees_of_freedom) / degrees_of_freedom) + 1e-15


def sampling_fit(residuals, covariance, tolerance=1e-9):
    """The residuals' chi-square against the users' sampling noise at each grid share (residualᵀ covariance⁻¹
    residual), and its degrees of freedom at the best share. Identical submissions (a blend that is one
    member) make the covariance singular: their directions are left out."""
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    kept = eigenvalues > eigenvalues[:, -1:] * tolerance
    coordinates = np.einsum("gi,gij->gj", residuals, eigenvectors)
    chi2 = np.where(kept, coordinates**2 / np.where(kept, eigenvalues, 1), 0).sum(axis=1)
    return chi2, int(kept[chi2.argmin()].sum()) - 1


def fit_share(last, random, board, board_name="public", user_scores=None, names=None):
    """The Calibration of one board from its submissions' part recalls and board scores (equal lengths), where
    known their per-user holdout part recalls (user_scores: (last, random), users x submissions), and their
    names (by default #1, #2...)."""
    last, random, board = (np.asarray(values, dtype=float) for values in (last, random, board))
    n = len(board)
    if n < MIN_SUBMISSIONS:
        return Calibration(board_name, n, reason=f"{n} submissions with part scores; record at least {MIN_SUBMISSIONS}")
    cosine = last @ random / (np.linalg.norm(last) * np.linalg.norm(random) or 1)
    if math.sqrt(max(0.0, 1 - cosine**2)) < ALIKE:
        return Calibration(
            board_name,
            n,
            reason="the submissions' last and random part scores are too alike (in proportion) to separate the parts; "
            "record submissions of different kinds (EASE, a sequential model, a blend)",
        )
    mixes = np.outer(GRID, last) + np.outer(1 - GRID, random)  # grid points x submissions
    rss = ((board - mixes) ** 2).sum(axis=1)
    best = int(rss.argmin())
    inside = GRID[rss <= _within(rss[best], n - 1)]
    levels = mixes @ board / np.einsum("ij,ij->i", mixes, mixes)
    free_rss = ((board - levels[:, None] * mixes) ** 2).sum(axis=1)
    free = int(free_rss.argmin())
    estimate = Calibration(
        board_name,
        n,
        last_share=float(GRID[best]),
        interval=(float(inside.min()), float(inside.max())),
        residuals=board - mixes[best],
        free_level=(float(GRID[free]), float(levels[free])),
        level_rejected=bool(rss[best] > _within(free_rss[free], n - 2)),
        names=list(names) if names is not None else [f"#{i + 1}" for i in range(n)],
        scores=(last, random, board),
    )
    if user_scores is not None:
        covariance = noise_covariance(*user_scores)
        chi2, degrees = sampling_fit(board - mixes, covariance)
        if degrees >= 1:  # one distinct profile leaves no residual to judge the noise by
            estimate.noise_p = float(stats.chi2.sf(chi2.min(), degrees))
            estimate.z_scores = estimate.residuals / np.sqrt(np.diag(covariance[best]))
            sampled = GRID[chi2 <= chi2.min() + stats.chi2.ppf(LEVEL, 1)]
            interval = estimate.interval
            estimate.parts_of_interval = (interval, (float(sampled.min()), float(sampled.max())))
            estimate.interval = (float(min(interval[0], sampled.min())), float(max(interval[1], sampled.max())))
    gap = (last - random) ** 2  # board - random = a (last - random): the share scales each gap
    spread = rss[best] / (n - 1)
    estimate.weights = gap / gap.sum()
    estimate.half_width = (
        math.sqrt(spread * stats.f.ppf(LEVEL, 1, n - 1) / gap.sum()),
        math.sqrt(spread * stats.f.ppf(LEVEL, 1, n) / (gap.sum() + gap.max())),
    )
    return estimate


def resolved_objective(text, where, estimate_file=ESTIMATE_FILE, file=None):
    """The objective a setting names, `calibrated` replaced by the share the log estimates (as `last:<a>`);
    prints which share it uses. ConfigError (naming where) when it names none or there is no estimate to read."""
    try:
        objective, file = parse_objective(text), file or sys.stderr
    except ValueError as error:
        raise ConfigError(f"{where} {error}") from None
    if objective.share is None:
        return objective
    if objective.share != CALIBRATED:
        print(f"{where}: {objective.name}: the last part's share {objective.share:g} (given)", file=file)
        return objective
    advice = f"or give the share yourself: `{objective.metric} last:0.5`"
    try:
        estimate = json.loads(Path(estimate_file).read_text())["calibration"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{where}: {objective.name} reads the leaderboard's estimate in {estimate_file}, which is missing or "
            f"unreadable: record submissions (`python -m recbole_ext.leaderboard add`) and list them "
            f"(`python -m recbole_ext.leaderboard`), {advice}"
        ) from None
    if not isinstance(estimate, dict) or estimate.get("last_share") is None:
        reason = estimate.get("cannot_tell") if isinstance(estimate, dict) else None
        raise ConfigError(f"{where}: {objective.name}: {estimate_file} holds no estimate ({reason}); {advice}")
    share = round(float(estimate["last_share"]), 2)
    low, high = estimate["interval"]
    print(
        f"{where}: {objective.name}: the last part's share {share:g} ({LEVEL:.0%} interval {low:.2f} to "
        f"{high:.2f}, {estimate['submissions']} {estimate['board']} submissions, from {estimate_file})",
        file=file,
    )
    return Objective(objective.metric, share=share, estimated=True)


def resolve_objectives(values, sources):
    """Settings' valid_metric and tune.metric with `calibrated` replaced by the log's share (printed)."""
    targets = [(values, "valid_metric", "valid_metric")]
    if isinstance(values.get("tune"), dict) and "metric" in values["tune"]:
        targets.append((values["tune"], "metric", "tune.metric"))
    for section, key, name in targets:
        try:
            parse_objective(section[key])
        except ValueError:
            continue  # refused with the checks of its section (check_settings, tune.space.parse_tune)
        where = f"{sources.get(name) or sources.get(name.split('.')[0], 'settings')}: {name}"
        objective, line = measurable(resolved_objective(section[key], where), values["holdout"])
        section[key] = objective.name
        check_parts(objective, values["holdout"], where)
        if line:
            print(f"{where}: {line}", file=sys.stderr)


def check_parts(objective, holdout, where):
    """An objective that follows a holdout part the holdout leaves empty is refused."""
    for part in objective.parts:
        if not holdout[part]:
            raise ConfigError(
                f"{where} {objective.name!r} follows the holdout's {part} part, which holdout.{part}: 0 leaves empty"
            )


def estimates_json(versions):
    """leaderboard.json from [(fingerprint, {board: Calibration})], most submissions first: `calibration`,
    the first version's public estimate (what `recall@10 calibrated` reads), and every version's by board."""
    return {
        "calibration": versions[0][1]["public"].as_json(),
        "data": {str(fp): {board: e.as_json() for board, e in estimates.items()} for fp, estimates in versions},
    }
