"""Search a model's hyper-parameters with Ray Tune; get the best config back.

    python tune.py --config yaml/<model>.yaml [--data RAW_DIR] [--num-samples N] [--output DIR]
                   [--device auto|cpu|cuda] [--quick] [--address auto|HOST:PORT] [--resume]
                   [--retrain-best] [key=value ...]

The search is the `tune:` section of the settings (docs/tuning.md);
settings layer as in run.py. --resume continues the search in --output.
Exit codes: 0 done, 1 no trial produced a score, 2 bad settings (one `error:`
line, before Ray starts), 130 interrupted by Ctrl-C or SIGTERM (--resume).
"""

import argparse
import logging
import sys

from atomic_data import RawDataError
from recbole_ext import ConfigError
from recbole_ext.config.settings import load_settings
from recbole_ext.tune.driver import resume_settings, search
from recbole_ext.tune.results import TRIALS_CSV, TRIALS_PLOT, describe_honest, format_table
from recbole_ext.utils.run_folder import SUBMISSION


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], usage=__doc__.split("\n\n")[1])
    parser.add_argument("--config", help="a yaml file with a `tune:` section (its `model:` names the model)")
    parser.add_argument("--model", help="model name, when the --config file has no `model:`")
    parser.add_argument("--data", help="raw competition folder (default: the embedded MovieLens-100K)")
    parser.add_argument("--num-samples", type=int, help="trials to sample (tune.num_samples; times the grid)")
    parser.add_argument("--output", help="search folder (default: outputs/tune-<model>-<time>)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="apply the model yaml's `quick:` block (CPU-sized)")
    parser.add_argument("--address", help="attach to a running Ray cluster: auto or HOST:PORT")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted search in --output")
    parser.add_argument(
        "--retrain-best", action="store_true", help="fit the best config on all data and write the submission"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)  # key=value anywhere on the line
    flags = {"data": args.data, "output_dir": args.output, "device": args.device, "tune.num_samples": args.num_samples}
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None] + args.overrides
    driver_log = logging.getLogger("movierec.tune")  # the driver's messages; a run logs on its own
    if not driver_log.handlers:
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        driver_log.addHandler(console)
        driver_log.setLevel(logging.INFO)
        driver_log.propagate = False
    try:
        if args.resume:
            if not args.output:
                raise ConfigError("--resume needs --output DIR, the folder of the interrupted search")
            settings = resume_settings(args.output, args.model, args.config, overrides, quick=args.quick)
        else:
            settings = load_settings(args.model, args.config, overrides, quick=args.quick)
        result = search(settings, address=args.address, resume=args.resume, retrain_best=args.retrain_best)
    except (ConfigError, RawDataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside Ray Tune's own handling: before the trials start, or after
        print("interrupted", file=sys.stderr)
        return 130
    print(format_table(result.trials, result.spec))
    print(f"trials: {result.output / TRIALS_CSV}  plot: {result.output / TRIALS_PLOT}")
    if result.interrupted:
        print(f"interrupted; continue with: python tune.py --resume --output {result.output}")
        return 130
    if result.best is None:
        print(
            f"error: no trial produced a {result.spec.metric}; see the errors in {result.output / TRIALS_CSV}",
            file=sys.stderr,
        )
        return 1
    if result.honest:
        print(f"best trial {result.honest['trial']}: {describe_honest(result.honest)}")
    print(f"best config: {result.best}  (python run.py --config {result.best})")
    if result.retrained:
        print(
            f"best config on all data: holdout {result.spec.metric} "
            f"{result.retrained['holdout'][result.spec.metric]:.4f}, "
            f"submission: {result.retrained['output_dir']}/{SUBMISSION}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
