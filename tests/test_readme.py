"""The README and its docs pages stay true: the bad-input table names tests that exist, every link resolves."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_the_bad_input_table_names_exists():
    section = (ROOT / "docs" / "bad-input.md").read_text()
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| case")]
    named = [re.findall(r"`(test_\w+)`", row) for row in rows]
    assert len(rows) >= 15 and all(named), "every row names its tests"
    defined = {
        name
        for path in (ROOT / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)\(", path.read_text(), re.M)
    }
    missing = sorted({name for names in named for name in names} - defined)
    assert missing == []


def test_every_relative_link_of_the_readme_and_the_docs_resolves():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).is_file():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
