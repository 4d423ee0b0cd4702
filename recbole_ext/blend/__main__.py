"""The blend's command line: python -m recbole_ext.blend RECIPE.yaml (options and exit codes: the package's
docstring)."""

import argparse
import logging
import sys

from atomic_data import RawDataError
from recbole_ext import ConfigError
from recbole_ext.blend import blend as blending
from recbole_ext.blend import fusion
from recbole_ext.utils import run_folder


def main(argv=None):
    doc = blending.__doc__
    parser = argparse.ArgumentParser(
        prog="python -m recbole_ext.blend", description=doc.split("\n")[0], usage=doc.split("\n\n")[1]
    )
    parser.add_argument("recipe", help="a blend recipe, e.g. yaml/blends/leaderboard.yaml")
    parser.add_argument("--data", help="raw competition folder (default: the embedded MovieLens-100K)")
    parser.add_argument("--output", help="the blend's folder (default: outputs/blend-<recipe>[-quick])")
    parser.add_argument("--runs", help="where member runs are kept and reused (default: blend-runs beside --output)")
    parser.add_argument("--quick", action="store_true", help="members' quick: blocks and the recipe's quick: block")
    parser.add_argument("--address", help="attach to a running Ray cluster: auto or HOST:PORT")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-parallel", type=int, help="train at most N runs at a time (default: as resources allow)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="settings for every member")
    args = parser.parse_intermixed_args(argv)
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    loggers = [logging.getLogger(name) for name in ("movierec.blend", "movierec.tune")]  # the driver's messages
    for log in loggers:
        log.addHandler(console)
        log.setLevel(logging.INFO)
        log.propagate = False
    run_folder.stop_on_signals()
    try:
        summary = blending.blend(
            args.recipe,
            args.data,
            args.output,
            args.runs,
            args.quick,
            args.address,
            args.device,
            args.max_parallel,
            args.overrides,
        )
    except (ConfigError, RawDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (blending.BlendError, fusion.EnsembleError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk, a quota: the blend's folder is staged, so none of it is left
        print(
            f"error: the blend failed: {run_folder.error_line(error)}; nothing was written to its output "
            "(finished member runs are kept and reused by the same command)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            f"interrupted ({run_folder.stopped_by()}): finished runs are kept and reused by the same command",
            file=sys.stderr,
        )
        return 130
    finally:
        for log in loggers:
            log.removeHandler(console)
    print(blending.report(summary), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
