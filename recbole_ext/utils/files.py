"""Outputs appear only when complete: written under a hidden temporary name beside
their final one, then renamed into place (one rename: readers never see half a file).

A temporary name holds the machine and the process writing it, so that the next
run in a folder removes what a killed process (SIGKILL, a crash of the machine)
left behind, and leaves alone what a live one, or one on another machine of a
shared filesystem, is still writing.
"""

import fcntl
import json
import logging
import math
import os
import re
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from recbole_ext import ConfigError

logger = logging.getLogger(__name__)

HOST = socket.gethostname()
PARTIAL = re.compile(r"^\..+\.partial-(?P<host>.+)-(?P<pid>\d+)(\.[^.]*)?$")  # (the suffix of a file)
# atomic_data's staging folders before these names, left in data folders prepared then: taken as this machine's
LEGACY = re.compile(r"^\.staging-[0-9a-f]{16}-(?P<pid>\d+)$")


def staging_path(final, pid=None):
    """The name an output folder is written under ("*" as pid: a glob for every process's, on any machine)."""
    writer = "*" if pid == "*" else f"{HOST}-{os.getpid() if pid is None else pid}"
    return final.with_name(f".{final.name}.partial-{writer}")


def new_staging(final):
    """An empty folder under final's staging name (final's parent made, dead processes' leftovers there removed)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(final.parent)
    staging = staging_path(final)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


class OutputTaken(ConfigError):
    """Another live process is writing the same output folder."""


_held = {}  # the claims this process holds: {claim file: its open descriptor}


@contextmanager
def claimed(final, wait=False):
    """final reserved for this process until the block ends: a second job writing it (a second run.py or
    blend with the same --output or runs) is refused (OutputTaken), or with wait, waits for the first.

    The claim is an flock on a hidden file beside final: the system releases it when its holder dies, so a
    killed job never blocks the next. Reentrant within a process."""
    claim = final.with_name(f".{final.name}.claim")
    if claim in _held:
        yield
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(claim, final, wait)
    os.ftruncate(fd, 0)
    os.write(fd, f"{HOST} {os.getpid()}".encode())
    _held[claim] = fd
    try:
        yield
    finally:
        del _held[claim]
        claim.unlink(missing_ok=True)  # while locked: a waiter then finds its file gone and locks a new one
        os.close(fd)


def _lock(claim, final, wait):
    waited = False
    while True:
        fd = os.open(claim, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            by = f"process {holder[1]} on {holder[0]}" if len(holder) == 2 else "another process"
            if not wait:
                raise OutputTaken(f"output folder {final} is being written by {by}; choose another --output") from None
            if not waited:
                logger.info("waiting for %s, which is writing %s", by, final)
                waited = True
            time.sleep(0.5)
            continue
        try:
            if os.fstat(fd).st_ino == os.stat(claim).st_ino:  # not a file its last holder removed meanwhile
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def staged(final, replace=False):
    """A folder written under its staging name, renamed to final when the block completes; gone if it fails.
    replace: an existing final (an earlier blend) is moved aside, the new folder renamed in, then the old
    one removed; a block that fails leaves it as it was. A second process staging the same final waits for
    the first with replace, else is refused (``claimed``); final made meanwhile is refused too."""
    with claimed(final, wait=replace), _staged(final, replace) as staging:
        yield staging


@contextmanager
def _staged(final, replace):
    if not replace and final.exists():
        raise OutputTaken(f"output folder {final} already exists; choose another --output")
    staging = new_staging(final)
    try:
        yield staging
        if replace and final.exists():
            old = staging_path(final.with_name(final.name + ".old"))
            final.rename(old)
            staging.rename(final)
            shutil.rmtree(old)
        else:
            staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_atomic(path, write):
    """Call write(tmp) for a file beside path, then rename it to path; on failure nothing is left."""
    path = Path(path)
    remove_dead_partials(path.parent)  # e.g. a dataset cache a killed run was writing
    partial = path.with_name(staging_path(path).name + path.suffix)  # the suffix: savefig reads it
    try:
        write(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def remove_dead_partials(folder):
    """Remove the temporary files and folders in folder of processes of this machine that no longer run."""
    for path in Path(folder).glob(".*"):
        found = PARTIAL.match(path.name) or LEGACY.match(path.name)
        if found and found.groupdict().get("host", HOST) == HOST and not _running(int(found["pid"])):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            logger.info("removed %s, left by process %s, which ended before finishing it", path, found["pid"])


def _running(pid):
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def json_text(value):
    """Strict JSON, indented: NaN and infinities (which other JSON readers refuse) become null."""
    return json.dumps(_finite(value), indent=2, allow_nan=False) + "\n"


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(entry) for key, entry in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(entry) for entry in value]
    return value
