"""A user sample of a competition folder: the same files for a random share of its users.

    python -m atomic_data.sample RAW_DIR OUT_DIR --users N [--seed S]

Writes OUT_DIR with ``train_ratings.csv`` holding every interaction of N users
drawn at random (seeded) and the side files copied unchanged: a smaller data set
with the same catalogue, to check that settings chosen on the full data hold on
fewer users (the competition's data, or the embedded MovieLens-100K by default).
"""

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from atomic_data import base_settings
from atomic_data.movielens import embedded_default
from atomic_data.raw import RATINGS_FILE, SIDE_FILES, RawDataError, read_ratings
from atomic_data.tables import write_table
from recbole_ext.utils.files import staged


def write_user_sample(raw_dir, out_dir, users, seed=0):
    """OUT_DIR with the interactions of `users` users of raw_dir drawn with seed; returns (users, interactions)."""
    ratings = read_ratings(raw_dir)
    all_users = np.unique(ratings["user"])
    if not 1 <= users <= len(all_users):
        raise RawDataError(f"--users must be between 1 and the {len(all_users)} users of {raw_dir}, got {users}")
    chosen = np.random.default_rng(seed).choice(all_users, users, replace=False)
    keep = np.isin(ratings["user"], chosen)
    out_dir = Path(out_dir)
    with staged(out_dir) as staging:
        write_table(
            staging / RATINGS_FILE,
            ["user", "item", "time"],
            [ratings[c][keep] for c in ("user", "item", "time")],
            sep=",",
        )
        for filename in SIDE_FILES:
            if (Path(raw_dir) / filename).is_file():
                shutil.copyfile(Path(raw_dir) / filename, staging / filename)
    return users, int(keep.sum())


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m atomic_data.sample", description=__doc__.split("\n")[0])
    parser.add_argument(
        "raw_dir", type=Path, nargs="?", help="competition folder (default: the embedded MovieLens-100K)"
    )
    parser.add_argument("out_dir", type=Path, help="the sample's folder (must not exist)")
    parser.add_argument("--users", type=int, required=True, help="how many users to keep")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.out_dir.exists():
            raise RawDataError(f"{args.out_dir}: already exists; choose another folder")
        raw_dir = args.raw_dir or embedded_default(base_settings()["data_dir"])
        users, interactions = write_user_sample(raw_dir, args.out_dir, args.users, args.seed)
    except RawDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out_dir}: {interactions} interactions of {users} users of {raw_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
