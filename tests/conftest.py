"""Shared fixtures: small real files, prepared once per session where possible."""

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atomic_data import HoldoutRule, prepare  # noqa: E402
from atomic_data.synthetic import Scale, generate  # noqa: E402
from recbole_ext.patches import compat, registry  # noqa: E402,F401  (RecBole patched and movierec registered first)

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


def wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise TimeoutError(f"nothing after {timeout} s")


def interrupt_when(process, started, signum, timeout=120):
    """Send signum to a command (a Popen with pipes) once started() holds; returns its stderr once it ends."""
    try:
        deadline = time.monotonic() + timeout
        while not started():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.2)
        process.send_signal(signum)
        return process.communicate(timeout=60)[1]
    finally:
        process.kill()


@dataclass
class RayCluster:
    address: str
    env: dict  # what a client of the cluster needs (its token)
    temp_dir: Path

    def ran_in_worker(self, pid):
        """Whether a worker process of this cluster had that pid (its log is named by it)."""
        return any(self.temp_dir.glob(f"session_latest/logs/worker-*-{pid}.out"))


@pytest.fixture
def ray_cluster():
    """A one-node Ray cluster started with `ray start`, as on a server, with token authentication
    (Ray's clusters authenticate their clients by default)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=false",
        ],
        env=env,
        cwd=temp_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (temp_dir / "ray_current_cluster").is_file(), timeout=60)
        yield RayCluster(f"127.0.0.1:{port}", env, temp_dir)
    finally:
        head.terminate()  # `ray start --block` stops the processes it started
        head.wait(timeout=60)
