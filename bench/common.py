"""Helpers shared by the benchmark scripts: data at competition scale, measured subprocesses."""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DATA = ROOT / "data" / "bench"
REAL_SIDE_FILES = ROOT.parent / "shared" / "data" / "competition_side"
LATEST_SMALL = ROOT.parent / "shared" / "data" / "ml-latest-small"  # MovieLens ml-latest-small, not committed


def competition_scale_raw(catalogue=None):
    """Synthetic raw files at competition scale, generated once (about 10 s).

    The real side files are used as the catalogue when they are next to the
    project (../shared/data/competition_side); otherwise items are generated.
    """
    catalogue = catalogue or (REAL_SIDE_FILES if REAL_SIDE_FILES.is_dir() else None)
    raw = BENCH_DATA / ("synthetic-real-catalogue" if catalogue else "synthetic")
    if not (raw / "train_ratings.csv").is_file():
        print(f"generating competition-scale synthetic data in {raw} ...", flush=True)
        args = [sys.executable, "-m", "atomic_data.synthetic", str(raw)]
        if catalogue:
            args += ["--catalogue", str(catalogue)]
        subprocess.run(args, check=True, cwd=ROOT)
    return raw


def latest_small_raw(source=LATEST_SMALL):
    """MovieLens ml-latest-small as a competition folder (atomic_data.movielens), converted once; None when the
    release is not at source."""
    from atomic_data.movielens import write_movielens_raw

    raw = BENCH_DATA / "ml-latest-small-raw"
    if not (raw / "train_ratings.csv").is_file():
        if not (Path(source) / "ratings.csv").is_file():
            return None
        write_movielens_raw(source, raw)
    return raw


def embedded_sample_raw(users):
    """A competition folder of `users` users of the embedded MovieLens-100K (seed 0), written once."""
    from atomic_data import base_settings
    from atomic_data.movielens import embedded_default
    from atomic_data.sample import write_user_sample

    raw = BENCH_DATA / f"ml-100k-{users}-users"
    if not (raw / "train_ratings.csv").is_file():
        write_user_sample(embedded_default(ROOT / base_settings()["data_dir"]), raw, users, seed=0)
    return raw


def model_settings(model_or_yaml, overrides=(), quick=False):
    """A run's settings for a model name or a model yaml relative to the project (yaml/gsasrec.yaml)."""
    from recbole_ext.config.settings import load_settings

    if model_or_yaml.endswith(".yaml"):
        return load_settings(config_file=ROOT / model_or_yaml, overrides=overrides, quick=quick)
    return load_settings(model_or_yaml, overrides=overrides, quick=quick)


def measured(args, **kwargs):
    """Run a command; returns (wall seconds, peak resident MB, stdout)."""
    started = time.perf_counter()
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True, **kwargs)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, args, stdout)
    return seconds, usage.ru_maxrss / 1024, stdout


def memory_mb():
    """(resident, peak resident) of this process, MB; writing 5 to /proc/self/clear_refs resets the peak."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


HOLDOUT_HEADER = ("recall@10", "95% interval", "last", "random", "ndcg@10")


def holdout_columns(summary):
    """A run summary's holdout figures, in HOLDOUT_HEADER's order, as printed."""
    detail = summary["holdout_detail"]
    low, high = detail["interval"]["recall@10"]
    return (
        f"{summary['holdout']['recall@10']:.4f}",
        f"{low:.4f} to {high:.4f}",
        *(f"{detail['parts'][part]['recall@10']:.4f}" for part in ("last", "random")),
        f"{summary['holdout']['ndcg@10']:.4f}",
    )


def table(rows, header):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)
