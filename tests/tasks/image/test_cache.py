import json
import shutil

import pytest
import torch

from pipeline.io import ArtifactError
from pipeline.maths import losses as Lm
from pipeline.maths import stats as Sm
from pipeline.tasks.image import cache as T
from pipeline.tasks.image.data import prepare
from tests.maths.synthetic import paper

LOSSES = {  # with the paper's options
    "end": paper(Lm.end_loss),
    "end2": paper(Lm.end2_loss),
    "pd_end2": paper(Lm.proxy_rkl_loss),
    "pd_fkl": paper(Lm.proxy_fkl_loss),
}
# accepted per-example error of the float16 store: |dL| <= 5e-3 max(|L|, 1)
FLOAT16_TOLERANCE = 5e-3


def test_cache_contents_and_manifest(cache, prepared, members):
    m = T.validate(cache, prepared, members)
    assert m["num_members"] == 3 and m["num_classes"] == 10 and m["member_seeds"] == [0, 1, 2]
    assert set(m["splits"]) == {"train", "val", "test", "ood_mnist", "ood_inverted", "shift"}
    test = T.load_split(cache, "test")
    assert test["member_log_probs"].shape == (150, 3, 10)
    assert test["member_log_probs"].dtype == torch.float32  # evaluation splits: float32
    assert T.load_split(cache, "train")["member_log_probs"].dtype == torch.float16
    assert test["mean_probs"].dtype == torch.float16 and test["rmi"].dtype == torch.float32
    for entry in m["splits"].values():
        assert entry["bytes"] == sum((cache / f).stat().st_size for f in entry["files"])
        assert entry["naive_float32_bytes"] == entry["n"] * 3 * 10 * 4


def test_cache_statistics_equal_the_members(cache):
    t = T.load_split(cache, "test")
    lp = t["member_log_probs"].double()
    exact = Sm.teacher_stats(lp)
    cached = T.stats_from_cache(t, 3)
    torch.testing.assert_close(cached.mean_probs, exact.mean_probs, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(cached.rmi, exact.rmi, atol=2e-3, rtol=2e-2)
    p = lp.exp()
    du = -(torch.xlogy(p, p)).sum(-1).mean(1)
    torch.testing.assert_close(t["data_uncertainty"].double(), du, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_float16_store_keeps_losses_within_tolerance(cache, name):
    """The losses from the cached float16 statistics vs from the float32 member log-probs."""
    t = T.load_split(cache, "train")
    exact = Sm.teacher_stats(t["member_log_probs"].float())
    cached = T.stats_from_cache(t, 3)
    g = torch.Generator().manual_seed(0)
    z = (
        torch.log(exact.mean_probs)
        + 2.0
        + 0.5 * torch.randn(exact.mean_probs.shape, generator=g, dtype=torch.float64)
    )
    want = LOSSES[name](z, exact, reduction="none")
    got = LOSSES[name](z, cached, reduction="none")
    assert float(((got - want).abs() / want.abs().clamp_min(1.0)).max()) < FLOAT16_TOLERANCE


def test_cache_built_from_other_members_is_rejected(cache, prepared, members):
    with pytest.raises(T.CacheMismatchError, match="other members"):
        T.validate(cache, prepared, members[:2])
    with pytest.raises(T.CacheMismatchError, match="other members"):
        T.validate(cache, prepared, [members[1], members[0], members[2]])


def test_cache_for_other_data_is_rejected(cache, data_cfg, tmp_path):
    other = json.loads(json.dumps(data_cfg))
    other["dataset"]["split_seed"] = 1
    prepare(other, tmp_path / "data")
    with pytest.raises(T.CacheMismatchError, match="other data"):
        T.validate(cache, tmp_path / "data")


def test_tampered_or_reshaped_cache_is_rejected(cache, tmp_path):
    bad = tmp_path / "teacher"
    shutil.copytree(cache, bad)
    p = bad / "val.safetensors"
    raw = bytearray(p.read_bytes())
    raw[-2] ^= 0x55
    p.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="val.safetensors: does not match the sha256"):
        T.load_split(bad, "val")
    m = json.loads((bad / "manifest.json").read_text())
    m["splits"]["test"]["n"] = 149
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(T.CacheMismatchError, match=r"manifest says \(149, 10\)"):
        T.load_split(bad, "test")
