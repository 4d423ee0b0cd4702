"""A staged folder appears complete or not at all; with replace, an earlier one stays until its successor is
complete (a blend's output folder)."""

import pytest

from recbole_ext.files import staged


def test_a_staged_replacement_keeps_the_old_folder_until_the_new_one_is_complete(tmp_path):
    final = tmp_path / "blend"
    final.mkdir()
    (final / "submission.csv").write_text("old")
    with pytest.raises(RuntimeError, match="the ensemble failed"), staged(final, replace=True) as staging:
        (staging / "submission.csv").write_text("half")
        raise RuntimeError("the ensemble failed")
    assert [p.name for p in tmp_path.iterdir()] == ["blend"]  # no staging folder left
    assert [p.name for p in final.iterdir()] == ["submission.csv"]
    assert (final / "submission.csv").read_text() == "old"

    with staged(final, replace=True) as staging:
        (staging / "submission.csv").write_text("new")
        (staging / "summary.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["blend"]  # the old one gone, nothing aside
    assert sorted(p.name for p in final.iterdir()) == ["submission.csv", "summary.json"]
    assert (final / "submission.csv").read_text() == "new"
