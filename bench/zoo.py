"""One epoch of every model run.py accepts: does it run, how long, what it scores.

    python bench/zoo.py [--models NAME ...] [--timeout 1200] [--memory-gb 8] [--jobs 1] [--markdown]

Every general, sequential and context-aware model of the registry (RecBole's,
movierec's and the aliases) runs ``run.py --model=X epochs=1 refit=false``
(and ``pretrain_epochs=1`` for the S3Rec models) with its yaml/ settings on
the embedded MovieLens-100K, each in its own subprocess with a limit on its CPU
seconds (all threads: a busy machine stretches wall time, not CPU time) and on
its address space, so a model that asks for too much memory fails alone
instead of taking the machine. Prints model, kind, status, CPU and wall
seconds, peak resident memory, holdout Recall@10 and, for a model that did not
run, its error line:

    ok        trained one epoch, scored the holdout, wrote the submission
    refused   run.py refused it before any work (exit 2, one `error:` line)
    failed    anything else (the last line of its output; `traceback` when it printed one)
    timeout   over --timeout CPU seconds
"""

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recbole.utils import ModelType

from bench.common import ROOT, table
from recbole_ext.config.keys import known_keys
from recbole_ext.patches import registry

KINDS = {
    ModelType.GENERAL: "general",
    ModelType.TRADITIONAL: "general",
    ModelType.SEQUENTIAL: "sequential",
    ModelType.CONTEXT: "context-aware",
}
ONE_EPOCH = ["epochs=1", "refit=false", "show_progress=false", "state=WARNING"]


def zoo_models():
    """{model: kind} for every model name run.py accepts of the three kinds, from the registry."""
    models = {}
    for name in registry.model_names():
        if registry.is_decision_tree(name):  # needs xgboost/lightgbm and labels; run.py refuses it
            continue
        kind = KINDS.get(registry.get_model(name).type)
        if kind:
            models[name] = kind
    return models


def run_one(model, output, cpu_limit, memory_bytes):
    """(status, wall seconds, CPU seconds, peak resident MB, recall@10 or None, message) of one run.py subprocess.

    The time limit is on CPU seconds (user + system, all threads), which a busy machine does not
    inflate as it does wall time; a run over it gets SIGXCPU.
    """

    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_limit), int(cpu_limit) + 10))
        os.setpgrp()  # its own process group: stopping the zoo ends the run and anything it started

    one_epoch = ONE_EPOCH + (["pretrain_epochs=1"] if "pretrain_epochs" in known_keys(model) else [])  # S3Rec
    args = [sys.executable, "run.py", f"--model={model}", f"--output={output}", *one_epoch]
    started = time.perf_counter()
    # torch's OpenMP threads spin while they wait: on a shared machine that makes runs several times slower
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=limits
    )
    output_lines = []
    reader = threading.Thread(target=lambda: output_lines.extend(process.stdout))
    reader.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)  # wait4: the child's CPU time
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if process.returncode is None:  # the zoo itself was stopped
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        reader.join()
    seconds, cpu, peak_mb = time.perf_counter() - started, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
    lines = [line.rstrip() for line in output_lines if line.strip()]
    if process.returncode == 0:
        summary = json.loads((Path(output) / "summary.json").read_text())
        return "ok", seconds, cpu, peak_mb, summary["holdout"]["recall@10"], ""
    if process.returncode == -signal.SIGXCPU:
        return "timeout", seconds, cpu, peak_mb, None, f"over {cpu_limit:.0f} CPU seconds"
    errors = [line for line in lines if line.startswith("error:")]
    if process.returncode == 2 and errors:
        return "refused", seconds, cpu, peak_mb, None, errors[-1][len("error:") :].strip()
    traceback = any(line.startswith("Traceback") for line in lines)
    last = lines[-1] if lines else f"exit code {process.returncode}"
    return "failed", seconds, cpu, peak_mb, None, ("traceback: " if traceback else "") + last


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", help="default: the whole zoo")
    parser.add_argument(
        "--timeout",
        type=float,
        default=1200,
        help="CPU seconds per model, all threads (default 1200: about 10 minutes on 2 idle cores)",
    )
    parser.add_argument("--memory-gb", type=float, default=8, help="address-space limit per model (default 8)")
    parser.add_argument("--jobs", type=int, default=1, help="models run at the same time (default 1)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown (docs/results.md's)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the finally that ends the running model
    zoo = zoo_models()
    unknown = [m for m in args.models or () if m not in zoo]
    if unknown:
        parser.error(f"not in the zoo: {', '.join(unknown)}")
    models = args.models or sorted(zoo, key=lambda m: (list(KINDS.values()).index(zoo[m]), m.lower()))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="zoo-") as outputs, ThreadPoolExecutor(args.jobs) as pool:

        def one(model):
            status, seconds, cpu, peak_mb, recall, message = run_one(
                model, Path(outputs) / model, args.timeout, int(args.memory_gb * 2**30)
            )
            row = (
                model,
                zoo[model],
                status,
                f"{cpu:.0f}",
                f"{seconds:.0f}",
                f"{peak_mb:.0f}",
                "" if recall is None else f"{recall:.4f}",
                message[:150],
            )
            print(" ".join(row), flush=True)
            return row

        rows = list(pool.map(one, models))
    header = ("model", "kind", "status", "CPU s", "wall s", "peak MB", "recall@10", "message")
    print(
        f"\none epoch ({' '.join(ONE_EPOCH[:2])}) on the embedded MovieLens-100K, limits {args.timeout:.0f} CPU "
        f"seconds and {args.memory_gb:g} GB per model, {args.jobs} at a time; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    if args.markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        print("\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows))
    else:
        print(table(rows, header))
    counts = {status: sum(row[2] == status for row in rows) for status in ("ok", "refused", "failed", "timeout")}
    print(", ".join(f"{n} {status}" for status, n in counts.items()))


if __name__ == "__main__":
    main()
