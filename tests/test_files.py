"""A staged folder appears complete or not at all; with replace, an earlier one stays until its successor is
complete (a blend's output folder)."""

import signal
import subprocess
import sys

import pytest
from conftest import ROOT

from recbole_ext.utils.files import OutputTaken, staged


def test_a_staged_replacement_keeps_the_old_folder_until_the_new_one_is_complete(tmp_path):
    final = tmp_path / "blend"
    final.mkdir()
    (final / "submission.csv").write_text("old")
    with pytest.raises(RuntimeError, match="the ensemble failed"), staged(final, replace=True) as staging:
        (staging / "submission.csv").write_text("half")
        raise RuntimeError("the ensemble failed")
    assert [p.name for p in tmp_path.iterdir()] == ["blend"]  # no staging folder left
    assert [p.name for p in final.iterdir()] == ["submission.csv"]
    assert (final / "submission.csv").read_text() == "old"

    with staged(final, replace=True) as staging:
        (staging / "submission.csv").write_text("new")
        (staging / "summary.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["blend"]  # the old one gone, nothing aside
    assert sorted(p.name for p in final.iterdir()) == ["submission.csv", "summary.json"]
    assert (final / "submission.csv").read_text() == "new"


def test_a_folder_another_process_writes_is_refused_or_waited_for_and_a_dead_holder_blocks_nothing(tmp_path):
    final = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(final)], cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "claimed\n"
        with pytest.raises(OutputTaken, match=f"^output folder {final} is being written by process {holder.pid} on"):
            with staged(final):
                pass
        holder.stdin.close()  # the holder goes on, then is killed while holding the claim
        with staged(final, replace=True) as staging:  # waits for it
            assert holder.poll() == -signal.SIGKILL
            (staging / "summary.json").write_text("{}")
    finally:
        holder.kill()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # neither claim nor staging left


HOLD = """
import os, signal, sys
from pathlib import Path
from recbole_ext.utils.files import claimed
with claimed(Path(sys.argv[1])):
    print("claimed", flush=True)
    sys.stdin.read()
    os.kill(os.getpid(), signal.SIGKILL)
"""
