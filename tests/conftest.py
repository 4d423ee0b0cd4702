"""Shared fixtures: small real files, prepared once per session where possible."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recbole_ext import compat, registry  # noqa: E402,F401  (RecBole patched and movierec registered first)
from atomic_data import HoldoutRule, prepare  # noqa: E402
from atomic_data.synthetic import Scale, generate  # noqa: E402

TINY = Scale(users=120, items=150, median=30, min_count=14, max_count=60)
TEST_RULE = HoldoutRule(last=2, random=3, max_fraction=0.3, min_train=8, seed=7)


def write_raw(folder, ratings, **side):
    """A competition-format folder: ratings [(user, item, time)], side file rows.

    side: titles=[(item, title)], years=[(item, year)], directors=..., writers=..., genres=...
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user,item,time"] + [f"{u},{i},{t}" for u, i, t in ratings]
    (folder / "train_ratings.csv").write_text("\n".join(lines) + "\n")
    for name, rows in side.items():
        column = name[:-1]  # titles -> title
        text = [f"item\t{column}"] + [f"{i}\t{v}" for i, v in rows]
        (folder / f"{name}.tsv").write_text("\n".join(text) + "\n")
    return folder


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory):
    """Synthetic competition files with all six files, 120 users x 150 items."""
    folder = tmp_path_factory.mktemp("tiny_raw")
    generate(folder, TINY, seed=3)
    return folder


@pytest.fixture(scope="session")
def tiny_prepared(tiny_raw, tmp_path_factory):
    return prepare(tiny_raw, tmp_path_factory.mktemp("tiny_prepared"), "tiny", TEST_RULE)


@pytest.fixture(autouse=True)
def quiet_known_warnings():
    """pytest resets warning filters per test: re-apply compat's list of RecBole's known ones."""
    compat.quiet_known_warnings()
