"""pipeline.compare_teachers: the cached-vs-online table from two runs' stored arrays."""

import numpy as np
import pytest
from safetensors.numpy import save_file

from pipeline.compare_teachers import compare, system_scores


def _run(root, preds: dict, weight=1.0):
    label = np.array([0, 1, 2, 1], dtype=np.int64)
    for system, pred in preds.items():
        d = root / "eval" / system
        d.mkdir(parents=True)
        logp = np.log(np.where(np.array(pred) == label, 0.8, 0.1)).astype(np.float32)
        save_file({"test.pred": np.array(pred, dtype=np.int64), "test.label": label,
                   "test.log_p_label": logp}, str(d / "per_example.safetensors"))  # fmt: skip
    (root / "members/seed0").mkdir(parents=True)
    save_file(
        {"w": np.full(3, weight, dtype=np.float32)}, str(root / "members/seed0/model.safetensors")
    )
    return root


def test_scores_and_table(tmp_path):
    common = {"ensemble": [0, 1, 2, 0], "member-0": [0, 1, 2, 0]}
    online = _run(tmp_path / "a", {**common, "end-seed0": [0, 1, 2, 1], "end-seed1": [0, 1, 0, 1]})
    cache = _run(tmp_path / "b", {**common, "end-seed0": [0, 0, 0, 0], "end-seed1": [0, 0, 0, 0]})
    s = system_scores(online).set_index("system")
    assert s.loc["end-seed0", "accuracy"] == 1.0 and s.loc["end-seed0", "agreement"] == 0.75
    assert s.loc["end-seed1", "nll"] == pytest.approx(-(3 * np.log(0.8) + np.log(0.1)) / 4)
    t = compare(online, cache)
    assert list(t.index) == ["Single model", "Ensemble", "EnD"]
    assert t.loc["EnD", "accuracy (online)"] == "0.875 ± 0.177"
    assert t.loc["EnD", "agreement (cache)"] == "0.500 ± 0.000"
    other = _run(tmp_path / "c", {"ensemble": [0, 1, 2, 0]}, weight=2.0)
    with pytest.raises(ValueError, match="same members"):
        compare(online, other)
