"""Which positive pairs each loss selects, on batches where the answer is known."""

from __future__ import annotations

import torch

from adasp.analysis.harmful_monitor import HarmfulPairMonitor
from adasp.analysis.pair_selection import harmful_fractions


def _identity(angles_deg, offset=0.0):
    a = torch.deg2rad(torch.tensor(angles_deg) + offset)
    return torch.stack([torch.cos(a), torch.sin(a)], dim=1)


def test_selection_on_a_constructed_batch():
    # Identity 0: three close images and one outlier (marked harmful); identity 1: all close.
    f0 = _identity([0.0, 2.0, 4.0, 60.0])
    f1 = _identity([180.0, 182.0, 184.0, 186.0])
    feats = torch.cat([f0, f1])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    harmful = torch.tensor([False, False, False, True, False, False, False, False])
    out = harmful_fractions(feats, labels, harmful, temperature=0.04)
    # Every anchor of identity 0 has the outlier as hardest positive: 4 harmful of 8 anchors.
    assert out["triplet"] == 0.5
    # SP-H picks identity 0's hardest pair (0, 3): harmful; identity 1's is clean.
    assert out["sp-h"] == 0.5
    # SP-LH: identity 0's least-hard anchor pair still involves the outlier (every anchor's
    # hardest positive is it), so harmful; identity 1 clean.
    assert out["sp-lh"] == 0.5
    # 3 of the 12 positive pairs touch the outlier.
    assert out["all"] == 3 / 12
    assert 0.0 <= out["adasp"] <= 0.5


def test_sp_lh_avoids_the_harmful_pair_that_sp_h_and_triplet_take():
    # Angles 0 (marked), 24, 30, 50: the farthest pair (0, 50) is harmful, and so is the hardest
    # positive of anchors 0, 30 and 50; anchor 24's hardest positive is 50 (clean), and it is
    # the least hard of the four, so SP-LH takes a clean pair.
    feats = torch.cat([_identity([0.0, 24.0, 30.0, 50.0]), _identity([200.0, 205.0])])
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    harmful = torch.tensor([True, False, False, False, False, False])
    out = harmful_fractions(feats, labels, harmful)
    assert out["sp-h"] == 0.5  # identity 0 harmful, identity 1 clean
    assert out["sp-lh"] == 0.0
    assert out["triplet"] == 3 / 6
    assert out["all"] == 3 / 7


def test_monitor_accumulates_and_restores(tmp_path):
    harmful = torch.tensor([False, True, False, False, False, False])
    monitor = HarmfulPairMonitor(harmful, temperature=0.05)
    feats = _identity([0.0, 70.0, 5.0, 180.0, 185.0, 190.0])
    batch = {"index": torch.arange(6), "pid": torch.tensor([0, 0, 0, 1, 1, 1])}
    monitor.observe({"features": [feats, feats]}, batch, step=0)
    monitor.observe({"features": feats}, batch, step=1)
    summary = monitor.summary()
    assert summary["batches"] == 2 and summary["sp-h"] == 0.5
    assert monitor.last_values()["harmful/sp-h"] == 0.5
    restored = HarmfulPairMonitor(harmful)
    restored.load_state_dict(monitor.state_dict())
    assert restored.summary() == summary
