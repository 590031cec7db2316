from pipeline.stages import gradient_analysis as G


def test_end2_head_share_collapses_with_classes_while_pd_stays_high():
    table = G.run(ks=(100, 5000), batch=2)
    share = table.groupby(["num_classes", "method"])["head_share"].mean()
    assert share[(5000, "end2")] < share[(100, "end2")] - 0.3
    assert share[(5000, "pd_end2")] > 0.8
    assert share[(5000, "pd_end2")] > share[(5000, "end2")] + 0.5


def test_rank_profile_columns():
    prof = G.rank_profile(k=200)
    assert list(prof.columns) == ["rank", "mean_prob", *G.METHODS]
    assert prof["mean_prob"].is_monotonic_decreasing
