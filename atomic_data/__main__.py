"""python -m atomic_data [RAW_DIR] --out OUT_DIR [--name NAME] [--holdout-KEY VALUE ...]

Without RAW_DIR it prepares the embedded MovieLens-100K default.
"""

import argparse
import logging
import sys
from pathlib import Path

from atomic_data import HoldoutRule, RawDataError, base_settings, prepare
from atomic_data.movielens import embedded_default
from recbole_ext.utils.run_folder import stop_on_signals, stopped_by


def main(argv=None):
    defaults = base_settings()
    rule_defaults = defaults["holdout"]
    parser = argparse.ArgumentParser(
        prog="python -m atomic_data",
        description="Check the competition's raw files and write RecBole atomic files plus a local holdout.",
    )
    parser.add_argument(
        "raw_dir",
        type=Path,
        nargs="?",
        help="folder with train_ratings.csv and the optional side .tsv files (default: the embedded MovieLens-100K)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(defaults["data_dir"]) / "prepared", help="output folder (default: %(default)s)"
    )
    parser.add_argument("--name", default=defaults["dataset"], help="dataset name (default: %(default)s)")
    for key, value in rule_defaults.items():
        parser.add_argument(
            f"--holdout-{key.replace('_', '-')}",
            dest=key,
            type=type(value),
            default=value,
            help=f"holdout.{key} (default: %(default)s)",
        )
    args = parser.parse_args(argv)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)  # e.g. a side file read as cp1252
    stop_on_signals()
    try:
        rule = HoldoutRule.from_dict({key: getattr(args, key) for key in rule_defaults})
        raw_dir = args.raw_dir or embedded_default(defaults["data_dir"])
        prepared = prepare(raw_dir, args.out, args.name, rule)
    except (RawDataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a quota: what was half written is removed
        print(f"error: preparing {args.out} failed: {error}; nothing was written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted ({stopped_by()}): nothing was written", file=sys.stderr)
        return 130
    report(prepared)
    return 0


def report(prepared):
    state = "cached, nothing to do" if prepared.cached else "written"
    print(f"{prepared.data_path} ({state})")
    for dataset in (prepared.name, prepared.valid_name):
        for path in sorted((prepared.data_path / dataset).iterdir()):
            print(f"  {path.relative_to(prepared.data_path)}")
    print(f"  {prepared.holdout_path.name}")
    for key, value in prepared.counts.items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    sys.exit(main())
