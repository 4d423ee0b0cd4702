"""Raw competition folder -> RecBole atomic files + holdout, cached by content.

Layout of one prepared version (immutable, named by its fingerprint):

    OUT_DIR/<fingerprint>/
        manifest.json                   inputs, settings, counts, files
        <name>/<name>.inter, .item      every interaction: the final fit
        <name>-val/<name>-val.inter, .item
                                        without the holdout: validation runs
        holdout.csv                     user,item,time,part (original ids)

RecBole reads it with ``data_path: OUT_DIR/<fingerprint>`` and
``dataset: <name>`` or ``<name>-val``. The fingerprint hashes the input files'
contents, the settings and FORMAT_VERSION, so a second run on unchanged input
finds the manifest and does no work. Everything is written in a staging
folder that is renamed into place only when complete.
"""

import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from atomic_data.holdout import NOT_HELD_OUT, PART_NAMES, holdout_parts
from atomic_data.items import build_item_table
from atomic_data.raw import RATINGS_FILE, SIDE_FILES, RawDataError, read_ratings, read_side_file, require_file
from atomic_data.tables import write_table
from recbole_ext.utils.files import claimed, remove_dead_partials, staged

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the written files change for the same input
INTER_HEADER = ("user_id:token", "item_id:token", "timestamp:float")
HOLDOUT_FILE = "holdout.csv"
MANIFEST_FILE = "manifest.json"
VALID_SUFFIX = "-val"


@dataclass(frozen=True)
class Prepared:
    """Where a prepared version lives and what it holds."""

    data_path: Path  # RecBole's data_path
    name: str  # dataset of the full files; name + VALID_SUFFIX: without holdout
    fingerprint: str
    counts: dict
    cached: bool

    @property
    def valid_name(self):
        return self.name + VALID_SUFFIX

    @property
    def holdout_path(self):
        return self.data_path / HOLDOUT_FILE

    def inter_path(self, dataset):
        """The .inter file of ``name`` (every interaction) or ``valid_name``."""
        return self.data_path / dataset / f"{dataset}.inter"

    @classmethod
    def load(cls, data_path, cached=True):
        """The prepared version at data_path, its files checked against the sizes its manifest recorded."""
        data_path = Path(data_path)
        again = f"delete {data_path} to prepare the data again"
        try:
            manifest = json.loads((data_path / MANIFEST_FILE).read_text())
            prepared = cls(data_path, manifest["name"], manifest["fingerprint"], manifest["counts"], cached)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RawDataError(
                f"{data_path / MANIFEST_FILE}: not a readable manifest of prepared data ({type(error).__name__}); "
                + again
            ) from None
        for name, size in manifest.get("files", {}).items():  # (older versions recorded none)
            path = data_path / name
            found = path.stat().st_size if path.is_file() else None
            if found != size:
                state = "missing" if found is None else f"{found} bytes"
                raise RawDataError(f"{path}: {state}, its manifest says {size} bytes (changed or cut short); {again}")
        return prepared


def fingerprint(raw_dir, name, rule):
    digest = hashlib.sha256()
    settings = {"format": FORMAT_VERSION, "name": name, "holdout": rule.as_dict()}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for filename in (RATINGS_FILE, *SIDE_FILES):
        path = Path(raw_dir) / filename
        if path.is_file():
            digest.update(filename.encode())
            with open(path, "rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()[:16]


def prepare(raw_dir, out_dir, name, rule):
    """Prepare (or find cached) atomic files for ``raw_dir``; returns Prepared."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise RawDataError(f"{raw_dir}: raw data folder does not exist")
    require_file(raw_dir / RATINGS_FILE)
    blocking = next(path for path in (out_dir, *out_dir.parents) if path.exists())
    if not blocking.is_dir():
        raise RawDataError(f"{blocking}: is a file, expected a folder")
    rule.check()
    key = fingerprint(raw_dir, name, rule)
    target = out_dir / key
    if out_dir.is_dir():  # also when this version is cached: what killed preparations of any version left
        remove_dead_partials(out_dir)
    if (target / MANIFEST_FILE).is_file():
        return Prepared.load(target, cached=True)

    with claimed(target, wait=True):  # a twin preparing this version at the same time is waited for, then used
        if (target / MANIFEST_FILE).is_file():
            return Prepared.load(target, cached=True)
        started = time.perf_counter()
        with staged(target) as staging:  # a killed preparation's folder is removed by the next one
            counts = _write_version(raw_dir, staging, name, rule)
            manifest = {
                "fingerprint": key,
                "name": name,
                "raw_dir": str(raw_dir.resolve()),
                "holdout": rule.as_dict(),
                "format": FORMAT_VERSION,
                "counts": counts,
                "seconds": round(time.perf_counter() - started, 3),
                "files": {  # checked by Prepared.load: a file cut short or edited by hand is named
                    str(path.relative_to(staging)): path.stat().st_size
                    for path in sorted(staging.rglob("*"))
                    if path.is_file()
                },
            }
            (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return Prepared.load(target, cached=False)


def _write_version(raw_dir, staging, name, rule):
    ratings = read_ratings(raw_dir)
    side = {f: frame for f in SIDE_FILES if (frame := read_side_file(raw_dir, f)) is not None}
    if side:
        named = np.concatenate([frame["item"].to_numpy() for frame in side.values()])
        unnamed = np.setdiff1d(ratings["item"], named)
        if len(unnamed):
            logger.warning(
                "%s: %d items are in no side file (%s), e.g. %s: their item features are empty",
                Path(raw_dir) / RATINGS_FILE,
                len(unnamed),
                ", ".join(side),
                ", ".join(map(str, unnamed[:5])),
            )

    users, items, times = ratings["user"], ratings["item"], ratings["time"]
    if not _sorted_by_user_and_time(users, times):  # the competition file already is
        order = np.lexsort((times, users))  # stable: ties in time keep file order
        users, items, times = users[order], items[order], times[order]
    pair = pd.Series(users * (int(items.max()) + 1) + items)  # one int64 per (user, item)
    first = ~pair.duplicated().to_numpy()
    duplicates = int(len(first) - first.sum())
    users, items, times = users[first], items[first], times[first]

    parts = holdout_parts(users, rule)
    kept = parts == NOT_HELD_OUT

    counts = {
        "users": len(pd.unique(users)),
        "items": len(pd.unique(items)),
        "interactions": len(users),
        "duplicates_dropped": duplicates,
        "holdout_users": len(pd.unique(users[~kept])),
        "holdout_interactions": int((~kept).sum()),
        "side_files": sorted(side),
    }
    # the .inter files are written in threads (pyarrow releases the GIL)
    # while the item features are computed
    with ThreadPoolExecutor(max_workers=2) as pool:
        writes = []
        for dataset, mask in ((name, slice(None)), (name + VALID_SUFFIX, kept)):
            folder = staging / dataset
            folder.mkdir()
            inter = (users[mask], items[mask], times[mask])
            writes.append(pool.submit(write_table, folder / f"{dataset}.inter", INTER_HEADER, inter))
            if side:
                item_ids = np.sort(pd.unique(inter[1]))
                table, item_stats = build_item_table(item_ids, side, inter[0], inter[1])
                write_table(folder / f"{dataset}.item", list(table.columns), [table[c] for c in table.columns])
                if dataset == name:
                    counts.update(item_stats)
        for write in writes:
            write.result()

    held = ~kept
    holdout = pd.DataFrame(
        {
            "user": users[held],
            "item": items[held],
            "time": times[held],
            "part": pd.Categorical.from_codes(parts[held] - 1, [PART_NAMES[1], PART_NAMES[2]]),
        }
    )
    holdout.to_csv(staging / HOLDOUT_FILE, index=False)
    return counts


def _sorted_by_user_and_time(users, times):
    user_step = np.diff(users)
    return bool(((user_step > 0) | ((user_step == 0) & (np.diff(times) >= 0))).all())
