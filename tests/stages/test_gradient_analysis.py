import numpy as np
import torch

from pipeline.maths.gradients import HEAD_THRESHOLD
from pipeline.maths.stats import teacher_stats
from pipeline.stages import gradient_analysis as G


def test_end2_head_share_collapses_with_classes_while_pd_stays_high():
    table = G.run(ks=(100, 5000), batch=2)
    share = table.groupby(["num_classes", "method"])["head_share"].mean()
    assert share[(5000, "end2")] < share[(100, "end2")] - 0.3
    assert share[(5000, "pd_end2")] > 0.8
    assert share[(5000, "pd_end2")] > share[(5000, "end2")] + 0.5


def test_rank_profile_against_the_closed_form_of_end():
    """EnD's gradient is ``softmax(z) - pi_bar`` in closed form: the profile's EnD column is its
    magnitude averaged per rank of pi_bar; the tail (ranks past the head) gets a larger
    gradient from EnD2 than from PD-EnD2, the mechanism of the paper."""
    k = 200
    prof = G.rank_profile(k=k)
    assert list(prof.columns) == ["rank", "mean_prob", *G.METHODS]
    stats = teacher_stats(G.synthetic_ensemble(4, k))
    z = G.perturbed_student(stats)
    order = torch.argsort(stats.mean_probs, dim=-1, descending=True)
    grad = (torch.softmax(z, -1) - stats.mean_probs).abs()  # of the loss summed over rows
    np.testing.assert_allclose(prof["end"], grad.gather(1, order).mean(0).numpy(), rtol=1e-10)
    np.testing.assert_allclose(prof["mean_prob"], stats.mean_probs.gather(1, order).mean(0))
    tail = prof["mean_prob"] < HEAD_THRESHOLD
    assert prof.loc[tail, "end2"].mean() > 10 * prof.loc[tail, "pd_end2"].mean()
