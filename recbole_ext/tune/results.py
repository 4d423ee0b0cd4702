"""A search's results: trials.csv, the printed table, trials.png and best.yaml.

The best trial's score is fitted: it was chosen on the users it is measured on.
The honest estimate chooses on one half of the holdout users and scores on the
other, both ways, from each trial's holdout_users.csv (a stopped trial's: those
of its best evaluation before the stop).
"""

from pathlib import Path

import pandas as pd

import yaml
from recbole_ext.config.keys import is_number
from recbole_ext.evaluator.metrics import cross_fitted_choice
from recbole_ext.tune.space import LOG_SCALE, is_scalar, plain_value
from recbole_ext.tune.trial import STOPPED, trial_folders
from recbole_ext.utils.files import write_atomic
from recbole_ext.utils.run_folder import SUMMARY, error_line, read_holdout_users

TRIALS_CSV = "trials.csv"
TRIALS_PLOT = "trials.png"
BEST_FILE = "best.yaml"


def trials_frame(results, configs, spec, trials_dir, unfinished=()):
    """One row per trial, best first: state, best metric, epochs, seconds (to the last report), sampled
    values, error."""
    rows = []
    for result in results:
        trial_id = Path(result.path).name
        history = result.metrics_dataframe
        history = history if history is not None and spec.metric in history else pd.DataFrame()
        folder = trials_dir / trial_id
        state = "INTERRUPTED" if trial_id in unfinished else _state(result, folder)
        row = {
            "trial": trial_id,
            "state": state,
            spec.metric: float("nan"),
            "best_epoch": None,
            "epochs": None,
            "seconds": None,
        }
        if not history.empty:
            scores = history[spec.metric]
            best = scores.idxmax() if spec.mode == "max" else scores.idxmin()
            row.update(
                {
                    spec.metric: scores[best],
                    "best_epoch": int(history["epoch"][best]),
                    "epochs": int(history["epoch"].iloc[-1]),
                    "seconds": round(float(history["trial_seconds"].iloc[-1]), 2),
                }
            )
        row.update({key: _cell(configs[trial_id].get(key)) for key in spec.search_space})
        row["error"] = _error_line(result.error) if result.error else ""
        row["output"] = next((str(p) for p in trial_folders(folder) if p.exists()), "")
        rows.append(row)
    frame = pd.DataFrame(rows).astype({"best_epoch": "Int64", "epochs": "Int64"}).sort_values("trial")
    return frame.sort_values(spec.metric, ascending=spec.mode == "min", na_position="last", kind="stable")


def honest_estimate(frame, spec, seed):
    """The best trial chosen on one half of the holdout users and scored on the other, both ways,
    from the trials' per-user scores. Adds to frame (in place) each trial's metric on either half,
    the halves that chose it, and the honest number on the best trial's row. None without scores."""
    per_user = {}
    for trial, folder in zip(frame["trial"], frame["output"]):
        users = read_holdout_users(folder) if folder else None
        if users is not None and spec.metric in users:
            per_user[trial] = users[spec.metric]
    if not per_user:
        return None
    scores = pd.DataFrame(dict(sorted(per_user.items()))).dropna()  # trials in id order: ties go to the first
    choice = cross_fitted_choice(scores, seed, spec.mode)
    half_a, half_b, honest = f"{spec.metric} half A", f"{spec.metric} half B", f"{spec.metric} honest"
    frame[half_a] = frame["trial"].map(choice["means"]["A"])
    frame[half_b] = frame["trial"].map(choice["means"]["B"])
    frame["chosen on"] = ["+".join(h for h in "AB" if choice["chosen"][h] == trial) for trial in frame["trial"]]
    best = frame.dropna(subset=[spec.metric]).index[0]
    frame[honest] = float("nan")
    frame.loc[best, honest] = choice["honest"]
    return {
        "metric": spec.metric,
        "fitted": float(frame.loc[best, spec.metric]),
        "honest": choice["honest"],
        "trial": frame.loc[best, "trial"],
        "trials": len(per_user),
        "users": choice["users"],
        "seed": seed,
    }


def describe_honest(honest):
    """The fitted and the honest number of a search, in words."""
    return (
        f"{honest['metric']} {honest['fitted']:.4f} fitted (the best, chosen on the users it is scored "
        f"on); {honest['honest']:.4f} honest (the best on one half of the holdout users, scored on the other "
        f"half, both ways; {honest['trials']} settings compared, halves of {honest['users'][0]} and "
        f"{honest['users'][1]} users)"
    )


def _state(result, folder):
    if result.error:
        return "ERROR"
    if (folder / SUMMARY).is_file():
        return "COMPLETED"
    if folder.with_name(folder.name + STOPPED).is_dir():
        return "STOPPED"  # by the scheduler (ASHA), before its last epoch
    return "UNFINISHED"


def _cell(value):
    return value if is_scalar(value) else yaml.safe_dump(value, default_flow_style=True).strip()


def _error_line(error):
    """The original exception of a failed trial, on one line."""
    cause = getattr(error, "cause", None)  # Ray wraps the trial's exception
    return error_line(cause if isinstance(cause, BaseException) else error)


def format_table(frame, spec):
    """The trials as printed at the end of a search, best first."""
    forms = {
        "seconds": "{:.1f}",
        **{key: "{:g}" for key in spec.search_space},
        **{column: "{:.4f}" for column in frame.columns if str(column).startswith(spec.metric)},
    }

    def cell(value, form):
        if not isinstance(value, (list, dict)) and pd.isna(value):
            return ""
        return form.format(value) if is_number(value) else str(value)

    shown = pd.DataFrame(
        {
            column: [cell(v, forms.get(column, "{}")) for v in frame[column]]
            for column in frame.columns
            if column != "output"
        }
    )
    shown["error"] = shown["error"].str.slice(0, 70)
    return shown.to_string(index=False)


def write_best(frame, configs, spec, settings, path, honest=None):
    """best.yaml: the search's settings with the best trial's values; run.py reproduces the trial."""
    best = frame.dropna(subset=[spec.metric]).iloc[0]
    searched = {key: plain_value(configs[best["trial"]][key]) for key in spec.search_space}
    left_out = {*searched, "model", "tune", "quick", "output_dir"}  # a search's, not a run's
    rest = {"model": settings.model, **{k: v for k, v in settings.values.items() if k not in left_out}}
    header = (
        f"# the best trial of the search in {path.parent}\n"
        f"# trial {best['trial']}: holdout {spec.metric} {best[spec.metric]:.4f} at epoch {best['best_epoch']}\n"
        + (f"# {describe_honest(honest)}\n" if honest else "")
        + f"# reproduce it: python run.py --config {path}\n"
    )
    text = (
        header
        + "# searched\n"
        + yaml.safe_dump(searched, sort_keys=False)
        + "# the other settings of the search\n"
        + yaml.safe_dump(rest, sort_keys=False)
    )
    write_atomic(path, lambda tmp: tmp.write_text(text))
    return path


def plot_trials(frame, spec, model, path):
    """The metric per trial and against each searched value (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(spec.search_space)
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(4.2 * (1 + len(keys)), 3.6), squeeze=False)
    axes = axes[0]
    order = frame.sort_values("trial").reset_index(drop=True)
    colours = order["state"].map({"COMPLETED": "tab:blue", "STOPPED": "tab:gray", "ERROR": "tab:red"}).fillna("k")
    axes[0].bar(range(len(order)), order[spec.metric].fillna(0), color=colours)
    failed = order.index[order["state"] == "ERROR"]
    axes[0].scatter(failed, [0] * len(failed), marker="x", color="tab:red", zorder=3, clip_on=False)
    axes[0].set_xticks(range(len(order)), [t[-5:] for t in order["trial"]], rotation=90, fontsize=7)
    axes[0].set(
        title=f"{model}: {spec.metric} per trial",
        xlabel="trial (blue done, grey stopped, red failed)",
        ylabel=spec.metric,
    )
    scored = frame.dropna(subset=[spec.metric])
    for ax, key in zip(axes[1:], keys):
        values = scored[key]
        if all(is_number(v) for v in values):
            ax.scatter(values, scored[spec.metric], color="tab:blue")
            if spec.search_space[key][0] in LOG_SCALE or (values.min() > 0 and values.max() >= 100 * values.min()):
                ax.set_xscale("log")
        else:  # categories: lists, strings, booleans
            labels = sorted({str(v) for v in values})
            ax.scatter([labels.index(str(v)) for v in values], scored[spec.metric], color="tab:blue")
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        ax.set(title=f"{spec.metric} against {key}", xlabel=key)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
