"""Competition raw files -> checked tables -> RecBole atomic files + holdout.

    python -m atomic_data RAW_DIR --out OUT_DIR [--name NAME]

Defaults (dataset name, holdout rule, data folder) live in yaml/base.yaml.
"""

from pathlib import Path

import yaml
from atomic_data.holdout import HoldoutRule
from atomic_data.prepare import Prepared, prepare
from atomic_data.raw import RawDataError

BASE_YAML = Path(__file__).resolve().parent.parent / "yaml" / "base.yaml"

__all__ = ["BASE_YAML", "HoldoutRule", "Prepared", "RawDataError", "base_settings", "prepare"]


def base_settings():
    """The project defaults of yaml/base.yaml, as plain values."""
    return yaml.safe_load(BASE_YAML.read_text())
