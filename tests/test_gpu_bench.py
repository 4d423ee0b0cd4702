"""bench/gpu.py on the CPU: every part runs here with tiny data (a Check with device cpu), the same code the GPU
run uses, so that the first GPU run is not the code's first. Real RecBole trainers, a real local Ray, real files."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import yaml
from bench import gpu
from recbole_ext.config.settings import load_settings
from recbole_ext.quick_start.pipeline import run

ROOT = Path(__file__).resolve().parent.parent
TINY_ENCODER = ["MAX_ITEM_LIST_LENGTH=20", "hidden_size=16", "inner_size=32", "n_layers=1", "train_batch_size=16"]
HOLDOUT = "holdout={min_train: 8, random: 3}"  # holdout users in the tiny data
SASREC = {"epochs": 1, "MAX_ITEM_LIST_LENGTH": 20, "hidden_size": 16, "inner_size": 32, "n_layers": 1}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models step 100x slower with two torch threads than with one on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def check(tiny_raw, tmp_path_factory):
    work = tmp_path_factory.mktemp("gpu_check")
    recipe = work / "recipe.yaml"
    members = {"EASE": {"model": "EASE", "set": {"reg_weight": 10.0}}, "SASRec": {"model": "SASRec", "set": SASREC}}
    recipe.write_text(yaml.safe_dump({"members": members, "blend": {"method": "score", "weights": "auto"}}))
    return gpu.Check(
        device="cpu",
        raw=str(tiny_raw),
        work=str(work),
        data_dir=str(work / "data"),
        encoder=TINY_ENCODER,
        batches=2,
        trials=[1.0, 1000.0],
        resources="{cpu: 0.5, gpu: 0.25}",  # on a CPU the GPU share is dropped, as on a laptop
        recipe=str(recipe),
        blend_args=["--data", str(tiny_raw)],
        overrides=[HOLDOUT],
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_it_prints_one_line_and_exits_0():
    done = subprocess.run([sys.executable, "bench/gpu.py"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.splitlines() == [
        "bench/gpu.py: torch sees no CUDA device here: nothing measured (it needs a GPU)"
    ]


def test_most_at_once_counts_the_spans_running_together():
    assert gpu.most_at_once([(0, 10), (1, 5), (2, 3), (6, 9)]) == 3
    assert gpu.most_at_once([(0, 1), (1, 2), (2, 3)]) == 1  # one ends as the next starts: one at a time
    assert gpu.most_at_once([(0, 1)]) == 1


def test_ease_part_fits_on_both_devices_and_scores_as_a_run_does(check, tmp_path):
    fit, recall = gpu.ease(check)
    assert fit.what == "fit 120 x 150, float32" and "CPU fit:" in fit.against
    assert recall.figures["recall"] == recall.figures["cpu_recall"]  # the same device: the same fit
    assert recall.check == "ok: |difference| 0.0e+00 <= 0.0001"
    overrides = [f"data={check.raw}", f"data_dir={check.data_dir}", HOLDOUT, "device=cpu", "state=WARNING"]
    summary = run(load_settings("EASE", overrides=[*overrides, f"output_dir={tmp_path / 'run'}"]), validate_only=True)
    assert recall.figures["recall"] == pytest.approx(summary["holdout"]["recall@10"], abs=1e-12)


def test_sequential_part_trains_each_model_in_each_precision_of_the_device(check):
    rows = list(gpu.sequential(check))
    assert [row.what.split(",")[0] for row in rows] == [
        name for name in ("SASRec CE", "SASRec gBCE", "BERT4Rec") for _ in ("off", "bf16")
    ]
    assert [row.what.split()[-1] for row in rows] == ["off", "bf16"] * 3  # fp16 is for GPUs: not on a CPU
    for row in rows:
        assert "L 20, hidden 16, 32 batches of 16" in row.what  # 8 a pass, passed over until min_epoch_steps
        assert row.figures["timed_batches"] == 2 and row.figures["epoch_seconds"] > 0
        assert "extrapolated from 2 batches" in row.measured
    for off, bf16 in zip(rows[::2], rows[1::2]):
        assert off.check == "" and bf16.check.startswith("ok: loss")  # within 5% of fp32's, not NaN
        assert bf16.figures["loss"] != off.figures["loss"]  # the precision changed something
        assert f"loss {off.figures['loss']:.4f}" in bf16.against


def test_tune_part_sees_trials_side_by_side_and_one_at_a_time_on_real_ray(check):
    side_by_side, one_at_a_time = gpu.tune_trials(check)
    assert side_by_side.figures["at_once"] == 2 and "2 of 2 at once; {'cpu': 2}" in side_by_side.measured
    assert side_by_side.check == "ok: they overlapped, every one on cpu"
    assert one_at_a_time.what.endswith("one at a time") and one_at_a_time.figures["at_once"] == 1
    assert one_at_a_time.against.startswith(f"the row above: {side_by_side.figures['span']:.1f} s, ")


def test_blend_part_compares_each_member_and_the_blend_with_a_cpu_run(check):
    run, reference, ease, sasrec, blend = gpu.blend(check)
    assert run.what.endswith("--device cpu") and run.figures["at_once"] == 2 and "{'cpu': 2}" in run.measured
    assert run.check == "ok: they overlapped, every one on cpu"
    assert reference.figures["at_once"] == 2 and reference.check == ""
    assert ease.what == "member EASE (EASE)" and ease.check.startswith("ok: ")
    assert ease.against.endswith("submission rows: identical")
    assert sasrec.what == "member SASRec (SASRec)" and sasrec.check == ""  # not deterministic: stated, not checked
    assert blend.what == "the blend, cross-fitted (ensemble)"
    assert blend.figures["rows"] == ease.figures["rows"] == 120 * 10


def test_the_gpu_checks_blend_trains_each_member_of_the_shipped_recipe_for_at_most_3_epochs(tiny_raw, monkeypatch):
    # its CPU reference must fit the part's budget: the quick recipe's sequential members ask for 40 epochs
    from recbole_ext.blend.recipe import member_settings, read_recipe

    monkeypatch.chdir(ROOT)  # the recipe's paths are the project's
    overrides = [arg for arg in gpu.BLEND_ARGS if "=" in arg]
    recipe = read_recipe(Path(gpu.BLEND_RECIPE), quick="--quick" in gpu.BLEND_ARGS)
    epochs = {
        spec.name: member_settings(recipe, spec, [*overrides, f"data={tiny_raw}"])["epochs"] for spec in recipe.members
    }
    assert epochs["gSASRec"] == epochs["BERT4Rec"] == 3 and max(epochs.values()) == 3


def test_top_k_part_ranks_every_user_and_agrees_with_the_cpu(check):
    rows = list(gpu.top_k_every_user(check))
    assert [row.what.split(":")[0] for row in rows] == ["EASE", "SASRec (untrained)"]
    for row in rows:
        assert "every user (120)" in row.what and "for 120 users" in row.against
        assert row.figures["agreement"] == 1.0 and row.check == "ok: top-10 lists of those users agree on 100.00%"


def test_each_part_runs_in_its_own_process_and_a_failure_or_its_budget_is_a_failed_row(check, tmp_path):
    rows = gpu.run_parts(check, {"ease": 300, "top-k": 0.5}, time.monotonic() + 600)
    assert [row.what for row in rows] == ["fit 120 x 150, float32", rows[1].what, "(the part)"]
    assert rows[1].check.startswith("ok: ")
    assert rows[2].part == "top-k" and rows[2].check.startswith("FAILED: stopped at its budget of 0 s")
    broken = gpu.Check(**{**vars(check), "raw": str(tmp_path / "missing"), "work": str(tmp_path)})
    (failed,) = gpu.run_parts(broken, {"ease": 300}, time.monotonic() + 600)
    assert failed.check.startswith("FAILED: exited 1: ") and "missing" in failed.check
    (late,) = gpu.run_parts(check, {"ease": 300}, time.monotonic() - 1)
    assert late.check == "FAILED: not run, the check's time ran out"
    text, failed_any = gpu.report(rows)
    assert failed_any and text.splitlines()[-1] == "1 of 3 rows FAILED"
    assert text.splitlines()[0].split() == ["part", "what", "measured", "against", "check"]
