"""Raw files -> atomic files at competition scale, against a naive row-by-row writer.

    python bench/prepare.py [--catalogue DIR]

Synthetic data with the competition's shape (31,360 users, 6,807 items,
about 5.15M interactions). Each step runs in a fresh process, so its wall
time includes interpreter start-up and its peak memory is its own.
Goals: movierec at most half the naive time, peak under 2 GB, cached run < 1 s.
"""

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import BENCH_DATA, competition_scale_raw, measured, table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catalogue", type=Path, help="folder with the five real side files")
    args = parser.parse_args()
    raw = competition_scale_raw(args.catalogue)

    work = Path(tempfile.mkdtemp(prefix="prepare-", dir=BENCH_DATA))
    try:
        out = work / "prepared"
        cli = [sys.executable, "-m", "atomic_data", str(raw), "--out", str(out)]
        first, first_mb, report = measured(cli)
        cached, cached_mb, cached_report = measured(cli)
        assert "cached, nothing to do" in cached_report
        in_process = (
            "import time; from atomic_data import prepare, HoldoutRule, base_settings; s = base_settings();"
            f"t = time.perf_counter(); p = prepare({str(raw)!r}, {str(out)!r}, s['dataset'], HoldoutRule(**s['holdout']));"
            "assert p.cached; print(time.perf_counter() - t)"
        )
        cached_call = float(measured([sys.executable, "-c", in_process])[2])
        naive_file = work / "naive.inter"
        naive, naive_mb, _ = measured([sys.executable, "bench/naive_inter.py", str(raw), str(naive_file)])
        ours = next(out.glob("*/movies/movies.inter"))
        same = filecmp.cmp(ours, naive_file, shallow=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(report)
    rows = [
        ("movierec: raw -> .inter, .item (full and -val), holdout", f"{first:.2f}", f"{first_mb:.0f}"),
        ("naive row-by-row Python writer: the full .inter only", f"{naive:.2f}", f"{naive_mb:.0f}"),
        ("movierec, second run (cached), whole command", f"{cached:.2f}", f"{cached_mb:.0f}"),
        ("movierec, second run (cached), prepare() call", f"{cached_call:.3f}", "-"),
    ]
    print(table(rows, ("step", "seconds", "peak MB")))
    print(f"\nsame .inter bytes as the naive writer: {same}")
    print(f"time ratio movierec / naive: {first / naive:.2f}  (goal <= 0.50)")
    print(f"peak memory: {first_mb:.0f} MB  (goal < 2048 MB)")
    print(f"cached run: {cached:.2f} s whole command, {cached_call:.3f} s in process  (goal < 1 s)")


if __name__ == "__main__":
    main()
