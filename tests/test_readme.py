"""The README's table of bad input and interruptions names tests that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_the_bad_input_table_names_exists():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Bad input and interruptions", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| case")]
    named = [re.findall(r"`(test_\w+)`", row) for row in rows]
    assert len(rows) >= 15 and all(named), "every row names its tests"
    defined = {name for path in (ROOT / "tests").glob("test_*.py")
               for name in re.findall(r"^def (test_\w+)\(", path.read_text(), re.M)}
    missing = sorted({name for names in named for name in names} - defined)
    assert missing == []
