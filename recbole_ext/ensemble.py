"""Blend finished runs into one submission, with a holdout estimate not fitted to itself.

    python -m recbole_ext.ensemble RUN_DIR RUN_DIR ... [--method priority|rank|score|stack|auto]
                                   [--weights auto|w1,w2,...] [--depth N] [--seed N] [--output DIR]
                                   [--candidates N] [--folds K] [--bags B] [--features a,b,...]
                                   [--objective NAME]

The methods, the fitted and the cross-fitted estimate and what is printed and
written: docs/blends.md; the work: recbole_ext/blend/ensemble.py.
"""

import argparse
import sys

from recbole_ext import ConfigError
from recbole_ext.blend import stack, stack_features
from recbole_ext.blend.ensemble import BLEND_METHODS, build, print_table
from recbole_ext.blend.fusion import EnsembleError
from recbole_ext.evaluator import calibration
from recbole_ext.evaluator.metrics import RECALL


def main(argv=None):
    usage = __doc__.split("\n\n")[1]
    parser = argparse.ArgumentParser(
        prog="python -m recbole_ext.ensemble", usage=usage, description=__doc__.split("\n")[0]
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished run folders (run.py outputs)")
    parser.add_argument("--method", choices=BLEND_METHODS, default="rank", help="how to blend (default: rank)")
    parser.add_argument("--weights", default="auto", help="auto, or one number per run (for priority: the order)")
    parser.add_argument(
        "--depth", type=int, help="read each run's top DEPTH items (default: 10 for priority, all for rank and score)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split of holdout users for the cross-fit")
    parser.add_argument("--output", help="output folder (default: outputs/ensemble-<method>-<time>)")
    parser.add_argument(
        "--candidates", type=int, default=stack.DEFAULT_CANDIDATES, help="stack: each run's top N are its candidates"
    )
    parser.add_argument("--folds", type=int, default=stack.DEFAULT_FOLDS, help="stack: folds of the cross-fit")
    parser.add_argument(
        "--bags", type=int, default=stack.DEFAULT_BAGS, help="stack: cross-fits on other fold draws, averaged"
    )
    parser.add_argument(
        "--features",
        help=f"stack: comma-separated feature groups (default: all the data allows: {','.join(stack_features.FEATURES)})",
    )
    parser.add_argument(
        "--objective",
        default=RECALL,
        help=f"what the blend maximises: {RECALL} (default), `{RECALL} last:0.4` (the last part's share of a mix "
        f"of the holdout's parts) or `{RECALL} calibrated` (the share the leaderboard log estimates)",
    )
    args = parser.parse_args(argv)
    features = tuple(args.features.split(",")) if args.features else None
    try:
        options = stack.Options(args.candidates, args.folds, features, args.bags)
        objective = calibration.resolved_objective(args.objective, "--objective")
        summary = build(args.runs, args.method, args.weights, args.seed, args.output, args.depth, options, objective)
    except (EnsembleError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
