"""Train a recipe's members side by side on Ray and blend them into one submission.

    python -m recbole_ext.blend RECIPE.yaml [--data RAW_DIR] [--output DIR] [--runs DIR] [--quick]
                                [--address auto|HOST:PORT] [--device auto|cpu|cuda] [--max-parallel N]
                                [key=value ...]

A recipe (yaml/blends/*.yaml) names its members and the blend:

    members:                          # name: member; weights follow this order
      EASE:
        config: yaml/ease.yaml        # a model yaml or a search's best.yaml (or model: NAME)
        set: {reg_weight: 450}        # settings over it; dotted keys reach inside
      SASRec:
        config: yaml/sasrec.yaml
        seeds: [1, 2, 3, 4]           # one run per seed, their lists averaged
    blend: {method: score, weights: auto, seed: 0, depth: ~, objective: recall@10}   # recbole_ext.blend.ensemble's options
    settings: {}                      # settings for every member
    quick:                            # --quick: changes to the recipe above (a member set to ~ is left out)
      members: {SASRec: {seeds: [1]}}

A member's settings layer as run.py's: base < its yaml < (with --quick, the yaml's quick: block)
< the recipe's settings < the member's set < key=value of the command line. Each run the
recipe asks for is one Ray task with the member's tune.resources_per_trial (fractional GPUs
pack members on one GPU; without a GPU the share is dropped, as for tune trials). A run is
kept in the runs folder (--runs, default: blend-runs beside the output) under its member name
and a key: the hash of its settings (without where and how it runs or logs) and the prepared
data's fingerprint. A run with that key already finished is reused, not trained again.

A member whose runs all fail is left out of the blend with a warning (its error and log are
named; the summary lists it); with fewer than two members left nothing is blended (exit 1).
The blend is recbole_ext.blend.ensemble's, on the members' run folders; the output folder (written
under a temporary name, then moved into place, replacing an earlier blend there) holds
submission.csv, summary.json, holdout_users.csv, report.txt and members/<name>, a link to each
member's run. Exit codes: 0 done, 1 fewer than two members finished or the blend failed,
2 bad input (one `error:` line, before Ray starts), 130 interrupted (Ctrl-C or SIGTERM).

By concern: recipe.py (the recipe and each member's settings), runs.py (the runs, reused or
trained on Ray, seed runs averaged), this module (blend(): the steps, the blend's folder and
report), __main__.py (the command line).
"""

import io
import json
import logging
import time
from pathlib import Path

from recbole_ext import ConfigError
from recbole_ext.blend import ensemble
from recbole_ext.blend.recipe import member_settings, read_recipe
from recbole_ext.blend.runs import member_folders, plan, train
from recbole_ext.trainer.recbole_config import resolve_device
from recbole_ext.utils import run_folder, tracking
from recbole_ext.utils.files import json_text, staged

__all__ = ["BlendError", "blend", "member_settings", "read_recipe", "report"]

logger = logging.getLogger("movierec.blend")

MEMBERS_DIR = "members"
REPORT = "report.txt"


class BlendError(RuntimeError):
    """Training went through, but the blend cannot be made (too few members finished)."""


def blend(
    recipe_path,
    data=None,
    output=None,
    runs_dir=None,
    quick=False,
    address=None,
    device=None,
    max_parallel=None,
    overrides=(),
):
    """Check the recipe, train what is missing, blend; returns the blend's summary."""
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError(f"--max-parallel must be >= 1, got {max_parallel}")
    recipe = read_recipe(recipe_path, quick)
    flags = {"data": data, "device": device}
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None] + list(overrides)
    default = Path("outputs").resolve() / f"blend-{recipe.path.stem}{'-quick' if recipe.quick else ''}"
    output = Path(output).resolve() if output else default
    check_output(output)
    runs_dir = Path(runs_dir).resolve() if runs_dir else output.parent / "blend-runs"
    started = time.perf_counter()
    runs = plan(recipe, runs_dir, overrides)
    if not address:  # a local Ray has this machine's devices: refuse a missing GPU before Ray starts
        for run in runs:
            resolve_device(run.settings)
    for run in runs:  # the runs trained for this blend are logged as one group, with the blend
        run.settings = tracking.in_group(run.settings, output.name)
    tracking.connect(runs[0].settings)
    logger.info(
        "%d runs: %d to train, %d reused",
        len(runs),
        sum(r.status != "reused" for r in runs),
        sum(r.status == "reused" for r in runs),
    )
    planned = time.perf_counter()
    train(runs, address, max_parallel)
    trained = time.perf_counter()
    folders = member_folders(recipe, runs, runs_dir)
    for spec in recipe.members:
        if spec.name not in folders:
            logger.warning("member %s left out of the blend: none of its runs finished", spec.name)
    if len(folders) < 2:
        errors = "; ".join(f"{run.label}: {run.error}" for run in runs if run.status == "failed")
        raise BlendError(
            f"only {len(folders)} of {len(recipe.members)} members finished, an ensemble needs two; "
            f"nothing blended ({errors})"
        )
    summary = write_blend(recipe, runs, folders, output, {"plan": planned - started, "train": trained - planned})
    track(runs[0].settings, output, summary)
    return summary


def track(settings, output, summary):
    """The blend as a tracked run (the tracking: settings of its first member, in the group of its runs): the
    recipe and members as parameters; the blend's holdout scores (cross-fitted, with interval, parts and
    activity groups; fitted), each member's and the weights as metrics; the blend folder's files."""
    with tracking.tracked(settings, output, "blend") as tracker:
        record = summary["blend"]
        members = {member["name"]: member for member in record["members"]}
        tracker.start(
            {
                "recipe": record["recipe"],
                "quick": record["quick"],
                **summary["config"],
                **{
                    f"members.{name}.{key}": member[key]
                    for name, member in members.items()
                    for key in ("model", "config")
                },
                "left_out": record["left_out"],
            }
        )
        tracker.log(tracking.holdout_metrics(summary["holdout"], summary["holdout_detail"]))
        tracker.log({f"holdout_fitted/{metric}": value for metric, value in summary["holdout_fitted"].items()})
        for member in summary["members"]:
            tracker.log({f"member/{member['name']}/{metric}": value for metric, value in member["holdout"].items()})
        tracker.log({f"weight/{name}": weight for name, weight in summary.get("weights", {}).items()})


def check_output(output):
    """The output folder may be new, or an earlier blend (replaced); anything else is refused."""
    try:
        if not output.exists() or "blend" in json.loads((output / run_folder.SUMMARY).read_text()):
            return
    except (OSError, ValueError):
        pass
    raise ConfigError(f"output folder {output} exists and is not a blend's; choose another --output")


def write_blend(recipe, runs, folders, output, seconds=None):
    """The ensemble of the member folders, as the output folder (staged, then replacing an earlier blend)."""
    weights = recipe.weights
    if weights != "auto":  # the weights of the members that finished, in their order
        kept = [w for spec, w in zip(recipe.members, weights) if spec.name in folders]
        if not sum(kept):
            raise BlendError(f"the members that finished ({', '.join(folders)}) all have weight 0")
        weights = ",".join(str(w) for w in kept)
    with staged(output, replace=True) as staging:
        (staging / MEMBERS_DIR).mkdir()
        for name, folder in folders.items():
            (staging / MEMBERS_DIR / name).symlink_to(Path(folder).resolve(), target_is_directory=True)
        inner = staging / "ensemble"
        summary = ensemble.build(
            [staging / MEMBERS_DIR / name for name in folders],
            recipe.method,
            weights,
            recipe.seed,
            inner,
            recipe.depth,
            recipe.stack,
            recipe.objective,
        )
        for path in inner.iterdir():
            path.rename(staging / path.name)
        inner.rmdir()
        summary["output_dir"] = str(output)
        summary["blend"] = {
            **blend_record(recipe, runs, folders),
            "seconds": {step: round(value, 2) for step, value in (seconds or {}).items()},
        }
        (staging / run_folder.SUMMARY).write_text(json_text(summary))
        (staging / REPORT).write_text(report(summary))
    return summary


def blend_record(recipe, runs, folders):
    """What summary.json keeps of the recipe and of each run: reused, trained or failed, where, how long."""

    def record(run):
        return {
            "seed": run.seed,
            "status": run.status,
            "key": run.key,
            "path": str(run.folder),
            "resources": run.resources,
            "started": run.started,
            "finished": run.finished,
            "seconds": round(run.finished - run.started, 2) if run.finished else None,
            "worker": run.worker,
            "error": run.error,
            "log": run.log,
        }

    return {
        "recipe": str(recipe.path.resolve()),
        "quick": recipe.quick,
        "members": [
            {
                "name": spec.name,
                "model": spec.model or None,
                "config": spec.config,
                "path": str(folders[spec.name]) if spec.name in folders else None,
                "runs": [record(run) for run in runs if run.member == spec.name],
            }
            for spec in recipe.members
        ],
        "left_out": [spec.name for spec in recipe.members if spec.name not in folders],
        **{status: sum(run.status == status for run in runs) for status in ("trained", "reused", "failed")},
    }


def report(summary):
    """The ensemble's table, then each run's status."""
    text = io.StringIO()
    ensemble.print_table(summary, text)
    for member in summary["blend"]["members"]:
        for run in member["runs"]:
            name = member["name"] + (f" seed {run['seed']}" if run["seed"] is not None else "")
            detail = {
                "trained": f"trained in {run['seconds']} s",
                "reused": "reused",
                "failed": f"FAILED: {run['error']}, left out",
            }[run["status"]]
            print(f"  {name}: {detail} ({run['log'] or run['path']})", file=text)
    return text.getvalue()
