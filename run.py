"""Train any RecBole or movierec model, score it like the leaderboard, write a submission.

    python run.py --model=SASRec [--config FILE] [--data RAW_DIR] [--output DIR]
                  [--device cpu|cuda] [--quick] [key=value ...]
    python run.py --predict-only CHECKPOINT [--output DIR] [--device cpu|cuda]

Settings: yaml/base.yaml < yaml/<model>.yaml < --config < --quick < key=value.
Without --data it runs on the embedded MovieLens-100K.
Exit codes: 0 done, 1 the run failed (its log and traceback kept in
<output>.failed/), 2 bad input (one `error:` line, nothing written),
130 interrupted by Ctrl-C or SIGTERM (what was finished kept in <output>.interrupted/).
"""

import argparse
import sys
import textwrap

from atomic_data import RawDataError
from recbole_ext import ConfigError
from recbole_ext.config.settings import load_settings
from recbole_ext.quick_start.pipeline import predict_only, run
from recbole_ext.utils.run_folder import SUBMISSION, error_line, stop_on_signals, stopped_by


def main(argv=None):
    usage = textwrap.dedent(__doc__.split("\n\n")[1]).strip()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], usage=usage)
    parser.add_argument(
        "--model", help="RecBole or movierec model name, e.g. SASRec, EASE, or a yaml/ name, e.g. gSASRec"
    )
    parser.add_argument("--config", help="a yaml file (its `model:` names the model when --model is absent)")
    parser.add_argument("--data", help="raw competition folder (default: the embedded MovieLens-100K)")
    parser.add_argument("--output", help="output folder (default: outputs/<model>-<time>)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="apply the model yaml's `quick:` block (CPU-sized)")
    parser.add_argument("--predict-only", metavar="CHECKPOINT", help="write a submission from a saved model.pth")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)  # key=value anywhere on the line
    flags = {"data": args.data, "output_dir": args.output, "device": args.device}
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None] + args.overrides
    stop_on_signals()
    try:
        if args.predict_only:
            output = predict_only(args.predict_only, args.output, args.device)
            print(f"submission: {output / SUBMISSION}")
            return 0
        settings = load_settings(args.model, args.config, overrides, quick=args.quick)
        summary = run(settings)
    except (ConfigError, RawDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        kept = getattr(interrupt, "kept_in", None)
        print(
            f"interrupted ({stopped_by()}): " + (f"what was finished is in {kept}" if kept else "nothing was written"),
            file=sys.stderr,
        )
        return 130
    except Exception as error:
        kept = getattr(error, "kept_in", None)
        if kept is None:  # not a run that failed: a bug, shown with its traceback
            raise
        print(f"error: the run failed: {error_line(error)} (its log and traceback: {kept})", file=sys.stderr)
        return 1
    low, high = summary["holdout_detail"]["interval"]["recall@10"]
    print(
        f"holdout recall@10: {summary['holdout']['recall@10']:.4f} (95% interval {low:.4f} to {high:.4f})  "
        f"ndcg@10: {summary['holdout']['ndcg@10']:.4f}"
    )
    print(f"submission: {summary['output_dir']}/{SUBMISSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
