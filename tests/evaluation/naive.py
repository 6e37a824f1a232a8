"""A deliberately simple, loop-based ranking evaluator: the reference the fast one must match.

Per query: drop junk, stable-sort by distance (ties by gallery index), walk the list.
"""

from __future__ import annotations

import numpy as np


def naive_evaluate(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank=50,
    camera_filter=True,
    ap_mode="standard",
    junk_pid=-1,
):
    distmat = np.asarray(distmat, dtype=np.float64)
    num_q, num_g = distmat.shape
    aps, inps, cmcs = [], [], []
    per_query_ap = np.full(num_q, np.nan)
    for q in range(num_q):
        ranking = []
        for j in sorted(range(num_g), key=lambda j, q=q: (distmat[q, j], j)):
            same_pid = g_pids[j] == q_pids[q]
            same_cam = g_camids[j] == q_camids[q]
            if junk_pid is not None and g_pids[j] == junk_pid:
                continue
            if camera_filter and same_pid and same_cam:
                continue
            ranking.append(bool(same_pid))
        num_matches = sum(ranking)
        if num_matches == 0:
            continue
        found = 0
        ap = 0.0
        last = 0
        first = None
        for position, is_match in enumerate(ranking, start=1):
            if not is_match:
                continue
            found += 1
            precision = found / position
            if ap_mode == "standard":
                ap += precision
            else:
                previous = 1.0 if position == 1 else (found - 1) / (position - 1)
                ap += (previous + precision) / 2
            last = position
            if first is None:
                first = position
        aps.append(ap / num_matches)
        per_query_ap[q] = ap / num_matches
        inps.append(num_matches / last)
        cmcs.append([1.0 if first <= k else 0.0 for k in range(1, max_rank + 1)])
    if not aps:
        return {
            "mAP": 0.0,
            "cmc": np.zeros(max_rank),
            "mINP": 0.0,
            "num_valid_queries": 0,
            "ap": per_query_ap,
        }
    return {
        "mAP": float(np.mean(aps)),
        "cmc": np.mean(np.array(cmcs), axis=0),
        "mINP": float(np.mean(inps)),
        "num_valid_queries": len(aps),
        "ap": per_query_ap,
    }


def random_case(rng, num_q, num_g, num_ids, num_cams, ties=False, junk=False):
    """A random distance matrix with identities and cameras; integer distances make ties."""
    q_pids = rng.integers(1, num_ids + 1, num_q)
    g_pids = rng.integers(0, num_ids + 1, num_g)  # 0: distractors
    if junk:
        g_pids[rng.random(num_g) < 0.1] = -1
    q_cams = rng.integers(0, num_cams, num_q)
    g_cams = rng.integers(0, num_cams, num_g)
    if ties:
        distmat = rng.integers(0, 5, (num_q, num_g)).astype(np.float32)
    else:
        distmat = rng.random((num_q, num_g))
        # Matches somewhat closer, as from a model, so ranks spread over the whole range.
        distmat -= 0.3 * (q_pids[:, None] == g_pids[None, :])
    return distmat, q_pids, g_pids, q_cams, g_cams
