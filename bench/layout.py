"""How recbole_ext reads: its units, their layers, module sizes, and how often one run climbs back up.

    python bench/layout.py [--model SASRec]

Units: each sub-package of recbole_ext is one unit, and so is each module at its top level.
Layers: a unit's layer is its height in the import graph of units (every import of recbole_ext in a
unit's files counts, lazy ones inside functions too); a unit that imports no other unit is layer 0.
Climbs: one run's settings are followed (run.py's load_settings + pipeline.run, tiny synthetic data,
one epoch): every recbole_ext function that is handed them (movierec's Settings, the run's resolved
model, or a RecBole Config built from them) counts once, at its first call (a reader reads a function
once), in call order. The units of that sequence, consecutive repeats merged, are the path a reader
follows; a climb is a step onto a unit of a higher layer than the one before.
"""

import argparse
import ast
import sys
import tempfile
import threading
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "recbole_ext"
sys.path.insert(0, str(ROOT))


def unit_of(path):
    """The unit of a file under recbole_ext: its sub-package, or the top-level module itself."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0].removesuffix(".py") if parts != ("__init__.py",) else "(root)"


def imports(path):
    """(line, unit) for each import of recbole_ext in a file's source; `(root)` for the package itself."""
    module_parts = ["recbole_ext", *path.relative_to(PACKAGE).with_suffix("").parts]
    if module_parts[-1] == "__init__":
        module_parts.pop()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = module_parts[: len(module_parts) - node.level + 1] if node.level else []
            base = base + (node.module.split(".") if node.module else [])
            targets = [base + [alias.name] for alias in node.names]
        else:
            continue
        for target in targets:
            if target[0] != "recbole_ext":
                continue
            exists = len(target) > 1 and _exists(target[:2])
            yield node.lineno, target[1] if exists else "(root)"  # (root): `from recbole_ext import ConfigError`


def _exists(parts):
    return (PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file()


def layers(graph):
    """Each unit's height in the import graph; units on a cycle are reported and share a height."""
    height, visiting, cycles = {}, set(), []

    def visit(unit, path):
        if unit in height:
            return height[unit]
        if unit in visiting:
            cycles.append(path[path.index(unit) :] + [unit])
            return 0
        visiting.add(unit)
        below = [visit(other, path + [unit]) for other in graph[unit] if other != unit]
        visiting.discard(unit)
        height[unit] = 1 + max(below) if below else 0
        return height[unit]

    for unit in sorted(graph):
        visit(unit, [])
    return height, cycles


def traced_run(model):
    """The files of the recbole_ext functions handed the settings, in first-call order, during one tiny run."""
    from recbole.config import Config

    from atomic_data.synthetic import Scale, generate
    from recbole_ext.config.settings import Settings, load_settings
    from recbole_ext.quick_start.pipeline import run
    from recbole_ext.trainer.recbole_config import Resolved

    carries_settings = (Settings, Resolved, Config)

    first_calls, seen = [], set()

    def profile(frame, event, arg):
        code = frame.f_code
        if event != "call" or not code.co_filename.startswith(str(PACKAGE)):
            return
        if any(isinstance(value, carries_settings) for value in frame.f_locals.values()):
            key = (code.co_filename, code.co_firstlineno)
            if key not in seen:
                seen.add(key)
                first_calls.append(Path(code.co_filename))

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        generate(raw, Scale(users=80, items=120, median=30, min_count=16, max_count=60), seed=1)
        overrides = [f"data={raw}", f"data_dir={tmp}/data", f"output_dir={tmp}/out", "epochs=1", "device=cpu"]
        settings = load_settings(model, None, overrides, quick=True)
        sys.setprofile(profile)
        threading.setprofile(profile)
        try:
            run(settings)
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
    return first_calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="SASRec")
    args = parser.parse_args(argv)
    files = sorted(PACKAGE.rglob("*.py"))
    graph, sizes = defaultdict(set), defaultdict(list)
    for path in files:
        unit = unit_of(path)
        graph[unit] |= {target for _, target in imports(path)} - {unit}
        sizes[unit].append((len(path.read_text().splitlines()), str(path.relative_to(ROOT))))
    height, cycles = layers(graph)
    print("unit            layer  modules  lines  largest module")
    for unit in sorted(graph, key=lambda u: (height[u], u)):
        lines, largest = max(sizes[unit])
        total = sum(n for n, _ in sizes[unit])
        print(f"{unit:15s} {height[unit]:5d}  {len(sizes[unit]):7d}  {total:5d}  {largest} ({lines})")
    print("import cycles between units:", "; ".join(" -> ".join(c) for c in cycles) or "none")
    lines, largest = max(item for unit in sizes for item in sizes[unit])
    print(f"largest module: {largest}, {lines} lines; over 350 lines:", end=" ")
    print(", ".join(f"{p} ({n})" for u in sizes for n, p in sizes[u] if n > 350) or "none")

    calls = traced_run(args.model)
    path = [unit_of(file) for file in calls if unit_of(file) != "(root)"]
    path = [unit for i, unit in enumerate(path) if i == 0 or unit != path[i - 1]]
    climbs = sum(height[b] > height[a] for a, b in zip(path, path[1:]))
    print(f"one {args.model} run: {len({*calls})} modules entered, {len(set(path))} units, path of {len(path)} steps")
    print("path:", " > ".join(f"{unit}[{height[unit]}]" for unit in path))
    print(f"climbs back to a higher layer: {climbs}")


if __name__ == "__main__":
    main()
