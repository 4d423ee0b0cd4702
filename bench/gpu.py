"""The GPU path in one command: movierec's CUDA code paths measured on one GPU against the CPU, in 8 minutes.

    python bench/gpu.py [--parts ease sequential tune blend top-k]          (or: make gpu-check)

Without CUDA it prints one line and exits 0. With CUDA, five parts, each in its own process with a time
budget (BUDGETS: a part that fails or outlives it is one FAILED row, and the next part still runs), then
one table: what each row measured on the GPU, what it is compared with, and its check (exit 1 if one
failed). Data: synthetic at competition scale (bench/common.py: 31,360 users x 6,807 items), generated once.

1. ease        EASE's fit on the GPU and on the CPU: seconds, peak memory; the holdout Recall@10 of both
               fits, both scored on the GPU, within 1e-4.
2. sequential  SASRec CE (yaml/sasrec.yaml), SASRec gBCE (yaml/gsasrec.yaml), BERT4Rec (yaml/bert4rec.yaml)
               with their yaml's GPU settings and hidden 256 (L 200): seconds per epoch extrapolated from 20
               timed batches, peak memory and mean loss of those batches, amp off against fp16, and bf16
               where the GPU has it natively; an amp's mean loss within 5% of amp off's.
3. tune        tune.py (its main, as `python tune.py` runs it), 4 EASE trials at yaml/ease.yaml's
               {cpu: 2, gpu: 0.25}: how many ran at once (from their summaries), each trial's device, and
               the time from the first trial's start to the last one's end against the same search with one
               trial at a time.
4. blend       python -m recbole_ext.blend yaml/blends/leaderboard.yaml --quick epochs=3 (its main; the embedded
               data), members at {cpu: 2, gpu: 0.25}: how many trained at once, their devices; each member's holdout
               Recall@10 and submission against the same recipe run on the CPU (EASE's Recall@10 within
               1e-4; the others' difference is stated, not checked: their training is not deterministic).
5. top-k       every user's top-k lists on the GPU, EASE and SASRec (untrained: scoring costs the same):
               seconds and peak memory, against the CPU on the first 1024 users (seconds, and the share of
               their top-10 items both agree on, at least 99%).

Peak memory is torch's peak allocation on the GPU (torch.cuda.max_memory_allocated, what the process held
before included), or the process's peak resident size on a CPU. tests/test_gpu_bench.py runs every part
on the CPU with tiny data (Check with device cpu), so that the GPU run is not the code's first.
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import BENCH_DATA, ROOT, competition_scale_raw, memory_mb, table

TOTAL_SECONDS = 480
BUDGETS = {"ease": 60, "sequential": 110, "tune": 110, "blend": 140, "top-k": 40}  # seconds; + the data's ~20 s
RECALL_TOLERANCE = 1e-4
LOSS_TOLERANCE = 0.05
AGREEMENT = 0.99
SEQUENTIAL = {"SASRec CE": "yaml/sasrec.yaml", "SASRec gBCE": "yaml/gsasrec.yaml", "BERT4Rec": "yaml/bert4rec.yaml"}
WARMUP_BATCHES = 2  # untimed: CUDA's lazy initialisation and kernel selection
REFERENCE_USERS = 1024  # top-k on the CPU: the first users, one batch of predict_batch_users


@dataclass
class Check:
    """What the parts run with: the GPU's (gpu_check), or the tests' tiny ones with device cpu."""

    device: str
    raw: str  # raw competition files of the parts ease, sequential, tune and top-k
    work: str  # output folders of this check
    data_dir: str  # prepared data and dataset caches, shared by the parts
    encoder: list  # settings of the sequential models over their yaml's
    batches: int  # timed training batches per model and precision
    trials: list  # reg_weight of the tune part's EASE trials
    resources: str  # tune.resources_per_trial of the trials and the blend's members
    recipe: str  # the blend part's recipe, and the arguments after it
    blend_args: list
    overrides: list = field(default_factory=list)  # settings over every run's (the tests' holdout for tiny data)


@dataclass
class Row:
    part: str
    what: str
    measured: str
    against: str = ""
    check: str = ""  # "ok: ..." or "FAILED: ..." where the row checks something
    figures: dict = field(default_factory=dict)  # the numbers behind the text


def verdict(passed, detail):
    return ("ok: " if passed else "FAILED: ") + detail


BLEND_RECIPE = "yaml/blends/leaderboard.yaml"
# the devices, not accuracy: the quick recipe's 40 epochs in the CPU's reference run would outlive the part's budget
BLEND_ARGS = ["--quick", "epochs=3"]


def gpu_check(work):
    return Check(
        device="cuda",
        raw=str(competition_scale_raw()),
        work=str(work),
        data_dir=str(BENCH_DATA / "gpu"),
        encoder=["hidden_size=256"],
        batches=20,
        trials=[100.0, 200.0, 400.0, 800.0],
        resources="{cpu: 2, gpu: 0.25}",
        recipe=BLEND_RECIPE,
        blend_args=BLEND_ARGS,
    )


# ---------------------------------------------------------------------------
# measuring


def timed(device, function, *args, **kwargs):
    """function(*args, **kwargs)'s result, its seconds, and the peak memory in MB while it ran (see the docstring
    above)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # peak resident size := current
    started = time.perf_counter()
    result = function(*args, **kwargs)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else memory_mb()[1]
    return result, seconds, peak


def memory(device, mb):
    return f"peak {mb:,.0f} MB {'GPU' if device == 'cuda' else 'resident'}"


def most_at_once(spans):
    """The most of the (start, end) spans that ran at one moment (one ending as another starts: not at once)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def run_span(summary):
    """(start, end) of a run from its summary: written at its end, with the seconds of its steps."""
    import datetime

    end = datetime.datetime.fromisoformat(summary["created"]).timestamp()
    return end - sum(summary["timings"].values()), end


def read_json(path):
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------------
# the data and models, built as the pipeline builds them


def settings(check, model=None, config_file=None, *overrides):
    from recbole_ext.config.settings import load_settings

    common = [f"data={check.raw}", f"data_dir={check.data_dir}", f"device={check.device}", "state=WARNING"]
    return load_settings(
        model, config_file and ROOT / config_file, [*common, "show_progress=false", *check.overrides, *overrides]
    )


def config_for(check, run_settings, prepared):
    from recbole_ext.trainer.recbole_config import recbole_config

    return recbole_config(run_settings, prepared.data_path, prepared.valid_name, Path(check.work) / "checkpoints")


def loaded(check, run_settings):
    """The validation fit's prepared data, config, dataset and history."""
    from recbole_ext.data.dataset import History, load_dataset
    from recbole_ext.quick_start.pipeline import prepare_data

    prepared = prepare_data(run_settings)
    config = config_for(check, run_settings, prepared)
    dataset = load_dataset(config)
    return prepared, config, dataset, History.from_file(dataset, prepared.inter_path(prepared.valid_name))


def free_memory():
    """Give back the GPU memory of the models just deleted: the next measurement's peak starts low."""
    import torch

    torch.cuda.empty_cache()


# ---------------------------------------------------------------------------
# the parts: each yields its rows as it measures them


def ease(check):
    import pandas as pd

    from recbole_ext.models.ease import EASE
    from recbole_ext.trainer.early_stopping import HoldoutScorer

    run_settings = settings(check, "EASE")
    prepared, config, dataset, history = loaded(check, run_settings)
    reference = EASE(config_for(check, run_settings.with_values(device="cpu"), prepared), dataset)
    _, cpu_seconds, cpu_peak = timed("cpu", reference.fit)
    model = EASE(config, dataset).to(config["device"])
    _, seconds, peak = timed(check.device, model.fit)
    scorer = HoldoutScorer(dataset, history, pd.read_csv(prepared.holdout_path), run_settings["predict_batch_users"])
    recall = scorer(model)["recall@10"]
    model.B.copy_(reference.B)  # the CPU's fit, scored the same way on the same device
    reference_recall = scorer(model)["recall@10"]
    shape = f"{dataset.user_num - 1:,} x {dataset.item_num - 1:,}"
    yield Row(
        "ease",
        f"fit {shape}, {run_settings['dtype']}",
        f"{seconds:.2f} s, {memory(check.device, peak)}",
        f"CPU fit: {cpu_seconds:.2f} s, {cpu_seconds / seconds:.1f}x as long, {memory('cpu', cpu_peak)}",
        figures={"seconds": seconds, "peak_mb": peak, "cpu_seconds": cpu_seconds},
    )
    difference = abs(recall - reference_recall)
    yield Row(
        "ease",
        f"holdout Recall@10, {len(scorer.users):,} users, both fits scored on {check.device}",
        f"{recall:.5f}",
        f"CPU fit's: {reference_recall:.5f}",
        verdict(difference <= RECALL_TOLERANCE, f"|difference| {difference:.1e} <= {RECALL_TOLERANCE:g}"),
        {"recall": recall, "cpu_recall": reference_recall},
    )


def amp_modes(device):
    """amp off, and every mixed precision the device runs natively."""
    from recbole_ext.models.window_trainer import amp_problem

    return ["off", *(amp for amp in ("fp16", "bf16") if not amp_problem(amp, device))]


def sequential(check):
    from recbole.utils import init_seed

    from recbole_ext.data.dataset import RepeatedPasses, train_loader
    from recbole_ext.patches import registry

    for label, config_file in SEQUENTIAL.items():
        data, off = None, None
        for amp in amp_modes(check.device):
            run_settings = settings(check, None, config_file, f"amp={amp}", *check.encoder)
            data = data or loaded(check, run_settings)  # the same dataset for every precision
            prepared, _, dataset, history = data
            config = config_for(check, run_settings, prepared)
            init_seed(config["seed"], config["reproducibility"])  # the same windows and weights for every precision
            # an epoch as a run has it (pipeline.fit): passed over again on small data, up to min_epoch_steps
            loader = RepeatedPasses(train_loader(config, dataset, history), run_settings["min_epoch_steps"])
            model = registry.get_model(run_settings.model)(config, dataset).to(config["device"])
            trainer = registry.get_trainer(model.type, run_settings.model)(config, model)
            batches = iter(loader)
            for batch in islice(batches, WARMUP_BATCHES):
                trainer.train_step(batch)
            losses, seconds, peak = timed(check.device, train_steps, trainer, batches, check.batches)
            epoch, loss = seconds / len(losses) * len(loader), sum(losses) / len(losses)
            what = (
                f"{label}, L {config['MAX_ITEM_LIST_LENGTH']}, hidden {config['hidden_size']}, "
                f"{len(loader)} batches of {config['train_batch_size']}, amp {amp}"
            )
            measured = (
                f"epoch {epoch:.1f} s (extrapolated from {len(losses)} batches), {memory(check.device, peak)}, "
                f"mean loss {loss:.4f}"
            )
            figures = {"epoch_seconds": epoch, "timed_batches": len(losses), "peak_mb": peak, "loss": loss}
            if off is None:
                off = figures
                yield Row("sequential", what, measured, figures=figures)
            else:
                change = loss / off["loss"] - 1
                yield Row(
                    "sequential",
                    what,
                    measured,
                    f"amp off: epoch {off['epoch_seconds']:.1f} s, {off['epoch_seconds'] / epoch:.2f}x as long, "
                    f"{memory(check.device, off['peak_mb'])}, loss {off['loss']:.4f}",
                    verdict(abs(change) <= LOSS_TOLERANCE, f"loss {change:+.2%} of amp off's"),
                    figures,
                )
            del model, trainer, batches
            free_memory()


def train_steps(trainer, batches, count):
    """The losses of count optimizer steps on the next batches (fewer when the epoch ends first)."""
    return [trainer.train_step(batch) for batch in islice(batches, count)]


@contextlib.contextmanager
def local_ray():
    """One local Ray runtime for a part's commands: the second search or blend reuses the first's worker processes
    (each would start its own, importing torch and RecBole again); shut down after, if the part started it."""
    import ray

    from recbole_ext.tune.driver import start_ray

    started = start_ray()
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def command(main, args):
    """A command's main(args), the function `python tune.py` or `python -m recbole_ext.blend` runs; its seconds."""
    started = time.perf_counter()
    code = main(args)
    if code:
        raise RuntimeError(f"{main.__module__} {' '.join(args)} exited {code}")
    return time.perf_counter() - started


def packed(part, what, spans, devices, device, wall, first=None):
    """The row of runs side by side (or, with first, the row of a second way of running them against the first's):
    their time, how many ran at once, their devices."""
    span = max(end for _, end in spans) - min(start for start, _ in spans)
    at_once, n = most_at_once(spans), len(spans)
    measured = f"{span:.1f} s first start to last end (wall {wall:.1f} s); {at_once} of {n} at once; {dict(devices)}"
    figures = {"span": span, "wall": wall, "at_once": at_once}
    if first:
        against = f"the row above: {first['span']:.1f} s, {first['span'] / span:.2f}x as long"
        return Row(part, what, measured, against, "", figures)
    together = verdict(at_once > 1 and devices == {device: n}, f"they overlapped, every one on {device}")
    added = f"their own seconds added up: {sum(end - start for start, end in spans):.1f} s"
    return Row(part, what, measured, added, together, figures)


def tune_trials(check):
    from tune import main as tune_main

    work, grid, first = Path(check.work), "{reg_weight: {grid: [" + ", ".join(map(str, check.trials)) + "]}}", None
    with local_ray():
        for extra in ([], ["tune.max_concurrent_trials=1"]):
            output = work / f"tune-{len(extra)}"
            args = ["--config", str(ROOT / "yaml/ease.yaml"), "--data", check.raw, "--output", str(output)]
            common = [f"data_dir={check.data_dir}", f"device={check.device}", "state=WARNING", "show_progress=false"]
            search = [f"tune.search_space={grid}", f"tune.resources_per_trial={check.resources}", *extra]
            wall = command(tune_main, [*args, *common, *check.overrides, *search])
            summaries = [read_json(path) for path in output.glob("trials/*/summary.json")]
            what = f"tune.py, {len(check.trials)} EASE trials at {check.resources}{', one at a time' if extra else ''}"
            devices = Counter(summary["device"] for summary in summaries)
            row = packed("tune", what, [run_span(s) for s in summaries], devices, check.device, wall, first)
            first = first or row.figures
            yield row


def blend(check):
    from recbole_ext.blend.__main__ import main as blend_main

    work, blends, first = Path(check.work), [], None
    with local_ray():
        for name, device in (("run", check.device), ("reference", "cpu")):
            output = work / f"blend-{name}"
            runs = work / f"blend-{name}-runs"
            args = [check.recipe, *check.blend_args, "--output", str(output), "--runs", str(runs)]
            flags = [f"data_dir={check.data_dir}", f"tune.resources_per_trial={check.resources}", "state=WARNING"]
            wall = command(blend_main, [*args, "--device", device, *flags, *check.overrides])
            members = read_json(output / "summary.json")["blend"]["members"]
            folders = {f"member {m['name']}": Path(m["runs"][0]["path"]) for m in members}  # one run each
            spans = [(run["started"], run["finished"]) for member in members for run in member["runs"]]
            devices = Counter(read_json(folder / "summary.json")["device"] for folder in folders.values())
            what = f"{' '.join([Path(check.recipe).name, *check.blend_args])}, members at {check.resources}"
            row = packed("blend", f"{what}, --device {device}", spans, devices, device, wall, first)
            first = first or row.figures
            yield row
            blends.append((folders, output))
    (folders, output), (cpu_folders, cpu_output) = blends
    for name, folder in folders.items():
        yield compared_with_cpu(name, folder, cpu_folders[name])
    yield compared_with_cpu("the blend, cross-fitted", output, cpu_output)


def compared_with_cpu(name, folder, cpu_folder):
    """A run's (or a blend's) holdout Recall@10 and submission against the CPU's; EASE's Recall@10 checked."""
    import pandas as pd

    summary, cpu_summary = read_json(folder / "summary.json"), read_json(cpu_folder / "summary.json")
    recall, cpu_recall = summary["holdout"]["recall@10"], cpu_summary["holdout"]["recall@10"]
    rows, cpu_rows = pd.read_csv(folder / "submission.csv"), pd.read_csv(cpu_folder / "submission.csv")
    same = len(rows.merge(cpu_rows, on=["user", "item"]))
    differ = "identical" if same == len(rows) == len(cpu_rows) else f"{len(rows) - same:,} of {len(rows):,} differ"
    difference = abs(recall - cpu_recall)
    return Row(
        "blend",
        f"{name} ({summary['model']})",
        f"holdout Recall@10 {recall:.4f}",
        f"CPU run's {cpu_recall:.4f}; submission rows: {differ}",
        verdict(difference <= RECALL_TOLERANCE, f"|difference| {difference:.1e} <= {RECALL_TOLERANCE:g}")
        if summary["model"] == "EASE"  # deterministic; the others' training is not
        else "",
        {"recall": recall, "cpu_recall": cpu_recall, "rows": len(rows), "same_rows": same},
    )


def top_k_every_user(check):
    from recbole.utils import init_seed

    from recbole_ext.patches import registry
    from recbole_ext.trainer.predict import top_k

    for label, model_name, config_file, extra in (
        ("EASE", "EASE", None, []),
        ("SASRec (untrained)", None, "yaml/sasrec.yaml", check.encoder),
    ):
        run_settings = settings(check, model_name, config_file, *extra)
        prepared, config, dataset, history = loaded(check, run_settings)
        init_seed(config["seed"], config["reproducibility"])
        model_class = registry.get_model(run_settings.model)
        model = model_class(config, dataset).to(config["device"])
        if label == "EASE":
            model.fit()
        reference = model_class(config_for(check, run_settings.with_values(device="cpu"), prepared), dataset)
        reference.load_state_dict(model.state_dict())
        k, batch_users = run_settings["top_n"], run_settings["predict_batch_users"]
        top, seconds, peak = timed(check.device, top_k, model, dataset, history, k, batch_users)
        users = history.users()[:REFERENCE_USERS]
        cpu_top, cpu_seconds, _ = timed("cpu", top_k, reference, dataset, history, k, batch_users, users=users)
        top10, cpu_top10 = (frame[frame["rank"] < 10][["user", "item"]] for frame in (top, cpu_top))
        agreement = len(top10.merge(cpu_top10)) / len(cpu_top10)
        n = len(history.users())
        yield Row(
            "top-k",
            f"{label}: top {k} of every user ({n:,}), {batch_users} a batch",
            f"{seconds:.2f} s, {memory(check.device, peak)}",
            f"CPU: {cpu_seconds:.2f} s for {len(users):,} users ({cpu_seconds * n / len(users):.1f} s extrapolated)",
            verdict(agreement >= AGREEMENT, f"top-10 lists of those users agree on {agreement:.2%}"),
            {"seconds": seconds, "peak_mb": peak, "cpu_seconds": cpu_seconds, "agreement": agreement},
        )
        del model, reference
        free_memory()


PARTS = {"ease": ease, "sequential": sequential, "tune": tune_trials, "blend": blend, "top-k": top_k_every_user}


# ---------------------------------------------------------------------------
# each part in its own process, within its budget


def run_parts(check, budgets, deadline):
    """The rows of each part (name: seconds it may take), each run in its own process; a part that fails or
    outlives its budget (or the deadline, a time.monotonic()) adds a FAILED row after the rows it finished."""
    rows = []
    for name, budget in budgets.items():
        limit = min(budget, deadline - time.monotonic())
        if limit <= 0:
            rows.append(Row(name, "(the part)", "", "", "FAILED: not run, the check's time ran out"))
            continue
        print(f"{name} (at most {limit:.0f} s) ...", file=sys.stderr, flush=True)
        rows_file, log = Path(check.work) / f"{name}.rows", Path(check.work) / f"{name}.log"
        rows_file.unlink(missing_ok=True)  # an earlier check's
        args = [sys.executable, __file__, "--part", name, "--check", json.dumps(asdict(check)), "--rows", rows_file]
        with open(log, "w") as out:
            process = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=limit)
            failure = f"exited {code}: {last_line(log)}" if code else None
        except subprocess.TimeoutExpired:
            stop(process)
            failure = f"stopped at its budget of {limit:.0f} s"
        if rows_file.is_file():
            rows += [Row(**json.loads(line)) for line in rows_file.read_text().splitlines()]
        if failure:
            rows.append(Row(name, "(the part)", "", "", f"FAILED: {failure} (its output: {log})"))
    return rows


def stop(process):
    """SIGTERM to the part's process group (tune.py and the blend end their Ray runs on it), SIGKILL after 30 s."""
    os.killpg(process.pid, signal.SIGTERM)
    for _ in range(60):
        process.poll()  # reaps the part's own process: a zombie still counts as a member of the group
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def last_line(path):
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    return lines[-1][-200:] if lines else "no output"


def part_main(name, check_json, rows_path):
    check = Check(**json.loads(check_json))
    with open(rows_path, "a") as out:
        for row in PARTS[name](check):
            out.write(json.dumps(asdict(row)) + "\n")
            out.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)  # one part, in its own process
    parser.add_argument("--check", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:
        return part_main(args.part, args.check, args.rows)
    import torch

    if not torch.cuda.is_available():
        print("bench/gpu.py: torch sees no CUDA device here: nothing measured (it needs a GPU)")
        return 0
    deadline = time.monotonic() + TOTAL_SECONDS
    work = BENCH_DATA / "gpu-runs" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    check = gpu_check(work)
    rows = run_parts(check, {name: BUDGETS[name] for name in args.parts}, deadline)
    properties = torch.cuda.get_device_properties(0)
    print(
        f"\n{properties.name}, {properties.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}; {os.cpu_count()} CPUs; outputs in {work}"
    )
    text, failed = report(rows)
    print(text)
    return 1 if failed else 0


def report(rows):
    """The table of the rows and a last line; and whether a check failed."""
    failed = [row for row in rows if row.check.startswith("FAILED")]
    header = ("part", "what", "measured", "against", "check")
    last = f"{len(failed)} of {len(rows)} rows FAILED" if failed else f"every check passed ({len(rows)} rows)"
    return table([(r.part, r.what, r.measured, r.against, r.check) for r in rows], header) + f"\n\n{last}", bool(failed)


if __name__ == "__main__":
    sys.exit(main())
