"""Outputs appear only when complete: written under a hidden temporary name beside
their final one, then renamed into place (one rename: readers never see half a file).
"""

import datetime
import os
from pathlib import Path


def default_output(name):
    """outputs/<name>-<time>, in the directory the command runs from."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("outputs").resolve() / f"{name}-{stamp}"


def staging_path(final, pid=None):
    """The name an output folder is written under ("*" as pid: a glob for every process's)."""
    return final.with_name(f".{final.name}.partial-{os.getpid() if pid is None else pid}")


def write_atomic(path, write):
    """Call write(tmp) for a file beside path, then rename it to path; on failure nothing is left."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}{path.suffix}")  # the suffix: savefig reads it
    try:
        write(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
