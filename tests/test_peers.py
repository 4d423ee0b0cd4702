"""bench/peers.py: movierec beside RecTools on movierec's holdout (tiny data), and its refusal without RecTools."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "peers.py"
HAS_RECTOOLS = importlib.util.find_spec("rectools") is not None


def rows(stdout):
    """The first table's rows: {(model, library): (recall@10, epochs)}."""
    lines = stdout.split("model   ")[1].splitlines()[2:]  # past the header and its rule
    found = {}
    for line in lines:
        cells = line.split()
        if len(cells) < 3 or cells[0] == "model":
            break
        found[cells[0], cells[1]] = (float(cells[2]), int(cells[8]))  # cells 3-5: "low to high"
    return found


@pytest.mark.skipif(not HAS_RECTOOLS, reason="RecTools is not installed (pip install -e '.[peers]')")
def test_peers_bench_scores_both_libraries_on_the_holdout(tiny_raw, tmp_path):
    args = ["--data", str(tiny_raw), "--data-dir", str(tmp_path), "--epochs", "1", "--hidden", "16", "--max-len", "20"]
    args += ["--models", "EASE", "SASRec", "gSASRec", "--negatives", "16"]
    result = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    recalls = rows(result.stdout)
    assert set(recalls) == {(m, lib) for m in ("EASE", "SASRec", "gSASRec") for lib in ("movierec", "RecTools")}
    # the same closed form at the same regularization: scored alike, the two EASE lists score alike
    assert abs(recalls["EASE", "movierec"][0] - recalls["EASE", "RecTools"][0]) < 0.015
    assert recalls["EASE", "RecTools"][0] > 0.2
    assert all(epochs == 1 for _, epochs in recalls.values())  # each library's epochs clocked, one each
    assert "movierec - RecTools" in result.stdout and "paired 95% interval" in result.stdout


@pytest.mark.skipif(HAS_RECTOOLS, reason="RecTools is installed: its absence cannot be checked here")
def test_peers_bench_without_rectools_says_how_to_install_it(tmp_path):
    result = subprocess.run([sys.executable, str(BENCH), "--data-dir", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout.splitlines() == [result.stdout.strip()]
    assert result.stdout.startswith("error: RecTools is not installed: pip install -e '.[peers]'")
    assert not list(tmp_path.iterdir())  # stopped before preparing any data
