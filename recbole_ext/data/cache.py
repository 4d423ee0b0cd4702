"""Caches keyed by the settings a computation actually read.

A cached result (a dataset, a pretrained checkpoint) must be rebuilt when a
setting it depends on changes. Instead of a hand-kept list of those settings,
the computation runs with a ``ReadRecorder`` around RecBole's Config, which
notes every key read; the result is stored under a hash of those keys' values,
and the set of keys in an index beside it. A lookup hashes the current values
of each set in the index: the same values of the same keys mean the same
reads, hence the same result (the computations are deterministic given what
they read). Settings that say where or how a computation runs, never what it
computes, are left out of the keys.

Two processes adding to one index at the same moment can lose one set: a
later lookup then misses and rebuilds, nothing worse.
"""

import hashlib
import json
import logging
from pathlib import Path

from recbole_ext.utils.files import write_atomic

logger = logging.getLogger(__name__)

# where and how a computation runs or reports, not what it computes
NOT_COMPUTED = {
    "device",
    "gpu_id",
    "use_gpu",
    "checkpoint_dir",
    "show_progress",
    "state",
    "log_wandb",
    "wandb_project",
    "worker",
}


class ReadRecorder:
    """RecBole's Config (or another recorder), noting every key read through it."""

    def __init__(self, config):
        self.config = config
        self.reads = set()

    def __getitem__(self, key):
        self.reads.add(key)
        return self.config[key]

    def __contains__(self, key):
        self.reads.add(key)
        return key in self.config

    def __setitem__(self, key, value):
        self.reads.add(key)  # a value set during the computation is one it works with
        self.config[key] = value

    def __getattr__(self, name):  # the rest of Config's interface
        if name in ("config", "reads"):  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        value = getattr(self.config, name)
        if name == "final_config_dict":  # read whole
            self.reads.update(value)
        return value


def unwrapped(config):
    """The Config inside recorders."""
    while isinstance(config, ReadRecorder):
        config = config.config
    return config


class ReadKeyedCache:
    """Files ``<folder>/<name>-<hash><suffix>``, and ``<name>.reads.json``: the key sets their computations read."""

    def __init__(self, folder, name, version, suffix=".pth"):
        self.folder, self.name, self.version, self.suffix = Path(folder), name, version, suffix
        self.index = self.folder / f"{name}.reads.json"

    def find(self, config):
        """The file of a computation that read the values config has now, or None."""
        for keys in self._key_sets():
            path = self._path(keys, config)
            if path.is_file():
                return path
        return None

    def load(self, config, read):
        """(read(file), file) for the file of a computation that read the values config has now, or (None, None).

        A file that cannot be read (cut short by a full disk, edited by hand) is removed with a warning
        naming it: the caller builds it again, instead of every later run failing on it."""
        path = self.find(config)
        if path is None:
            return None, None
        try:
            return read(path), path
        except Exception as error:  # unpickling and torch's errors alike
            logger.warning(
                "%s: a cache file that cannot be read (%s: %s): removed, built again", path, type(error).__name__, error
            )
            path.unlink(missing_ok=True)
            return None, None

    def path_for(self, config, reads):
        """Where the result of a computation that read these keys of config goes; remembers the keys."""
        keys = sorted(set(reads) - NOT_COMPUTED)
        known = self._key_sets()
        if keys not in known:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(self.index, lambda tmp: tmp.write_text(json.dumps([*known, keys], indent=1)))
        return self._path(keys, config)

    def _key_sets(self):
        try:
            return json.loads(self.index.read_text())
        except (OSError, ValueError):  # no index yet (or a broken one): nothing is cached
            return []

    def _path(self, keys, config):
        values = {key: config[key] for key in keys}
        text = json.dumps([self.version, values], sort_keys=True, default=str)
        return self.folder / f"{self.name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}{self.suffix}"
