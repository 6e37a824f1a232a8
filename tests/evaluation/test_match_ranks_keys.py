"""The integer-key histogram (``locate="keys"``, weak models' rankings) against the loop-based
reference and against the float grid it replaced (``locate="grid"``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adasp.evaluation import RankingEvaluator, match_ranks
from tests.evaluation.naive import naive_evaluate


def evaluate(case, locate, **options):
    dist, q_pids, g_pids, q_cams, g_cams = case
    evaluator = RankingEvaluator(g_pids, g_cams, 10, locate=locate, **options)
    evaluator.add(dist, q_pids, q_cams)
    return evaluator.result()


def weak_case(rng, num_q, num_g, kind, junk=False):
    """float32 distances where most items are nearer than each query's last match."""
    q_pids = rng.integers(1, 6, num_q)
    g_pids = rng.integers(0, 6, num_g)
    if junk:
        g_pids[rng.random(num_g) < 0.1] = -1
    q_cams, g_cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    if kind == "float":
        dist = rng.random((num_q, num_g)) + 0.01
    elif kind == "ties":  # few distinct values: ties with matches everywhere
        dist = rng.integers(1, 6, (num_q, num_g)) / 4
    else:  # negative and zero distances: where a match is at or below 0, the float grid
        dist = rng.random((num_q, num_g)) * 3 - 0.5
        dist[:, ::7] = 0.0
    return dist.astype(np.float32), q_pids, g_pids, q_cams, g_cams


def long_rows_case(rng, num_q, num_g, num_ids):
    """Market-like long rows of a weak model (5 % junk gallery items); the query identity's
    items slightly nearer on average."""
    q_pids = rng.integers(1, num_ids, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    g_pids[rng.random(num_g) < 0.05] = -1
    q_cams, g_cams = rng.integers(0, 4, num_q), rng.integers(0, 4, num_g)
    dist = rng.random((num_q, num_g)) + 0.2 - 0.1 * (q_pids[:, None] == g_pids[None, :])
    return dist.astype(np.float32), q_pids, g_pids, q_cams, g_cams


def keys_calls(monkeypatch):
    calls = []
    original = match_ranks._histogram_keys

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(match_ranks, "_histogram_keys", counted)
    return calls


def assert_identical(ours, reference):
    np.testing.assert_array_equal(ours["cmc"], reference["cmc"])
    np.testing.assert_array_equal(ours["ap"], reference["ap"])
    np.testing.assert_array_equal(ours["inp"], reference["inp"])


@pytest.mark.parametrize("kind", ["float", "ties", "signed"])
@pytest.mark.parametrize("slices", ["default", pytest.param("tiny", marks=pytest.mark.slow)])
def test_keys_match_the_reference_and_the_float_grid(monkeypatch, kind, slices):
    calls = keys_calls(monkeypatch)
    monkeypatch.setattr(match_ranks, "KEY_ITEMS_PER_BIN", 0)  # also on short rows
    if slices == "tiny":  # column slices, one-row groups, batched ties
        monkeypatch.setattr(match_ranks, "SLICE_ELEMENTS", 16)
        monkeypatch.setattr(match_ranks, "KEY_SLICE_ELEMENTS", 16)
        monkeypatch.setattr(match_ranks, "GRID_ENTRIES", 64)
        monkeypatch.setattr(match_ranks, "KEY_GRID_ENTRIES", 64)
        monkeypatch.setattr(match_ranks, "TIE_BATCH", 3)
    rng = np.random.default_rng(3)
    checked = 0
    for trial in range(40):
        case = weak_case(rng, int(rng.integers(1, 12)), int(rng.integers(2, 120)), kind, trial % 2)
        reference = naive_evaluate(*case, max_rank=10)
        if reference["num_valid_queries"] == 0:
            continue
        for ap_mode in ("standard", "trapezoid"):
            keys = evaluate(case, "keys", ap_mode=ap_mode)
            assert_identical(keys, evaluate(case, "grid", ap_mode=ap_mode))
            if ap_mode == "standard":
                np.testing.assert_allclose(keys["ap"], reference["ap"], rtol=0, atol=1e-12)
                np.testing.assert_allclose(keys["cmc"], reference["cmc"], rtol=0, atol=1e-12)
        checked += 1
    assert checked > 20
    # Signed rows take the keys only where every match is positive, the float grid elsewhere.
    assert calls


def test_keys_are_used_on_weak_market_like_rows(monkeypatch):
    # Long rows at the default settings, a weak model: the path a weak checkpoint takes.
    calls = keys_calls(monkeypatch)
    case = long_rows_case(np.random.default_rng(11), 6, 3000, 200)
    keys = evaluate(case, "keys")
    assert calls
    assert_identical(keys, evaluate(case, "grid"))
    reference = naive_evaluate(*case, max_rank=10)
    np.testing.assert_allclose(keys["ap"], reference["ap"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(keys["cmc"], reference["cmc"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("slices", ["default", "rows of two"])
def test_keys_with_hundreds_of_matches_per_query(monkeypatch, slices):
    # ~200 matches per query: ~400 thresholds a row, past the one-byte table of first
    # thresholds (int16 then); bins holding several matches; equal distances among them.
    calls = keys_calls(monkeypatch)
    monkeypatch.setattr(match_ranks, "KEY_ITEMS_PER_BIN", 0)
    if slices != "default":
        monkeypatch.setattr(match_ranks, "KEY_SLICE_ELEMENTS", 2 * 1500)
        monkeypatch.setattr(match_ranks, "KEY_GRID_ENTRIES", 1)
    rng = np.random.default_rng(8)
    num_q, num_g = 5, 1500
    g_pids = np.where(np.arange(num_g) < 1200, 1 + np.arange(num_g) % 3, 4)
    q_pids = rng.integers(1, 4, num_q)
    q_cams, g_cams = rng.integers(0, 2, num_q), rng.integers(0, 2, num_g)
    dist = (rng.random((num_q, num_g)) + 0.05).astype(np.float32)
    dist[:, ::11] = dist[:, 1::11].max()  # a block of equal distances, matches among them
    case = (dist, q_pids, g_pids, q_cams, g_cams)
    tables = []
    grid = match_ranks._KeyGrid
    monkeypatch.setattr(
        match_ranks, "_KeyGrid", lambda *args: tables.append(grid(*args)) or tables[-1]
    )
    keys = evaluate(case, "keys")
    assert calls
    assert {table.first.dtype for table in tables} == {torch.int16}
    assert max(table.max_run for table in tables) > 2
    assert_identical(keys, evaluate(case, "grid"))
    reference = naive_evaluate(*case, max_rank=10)
    np.testing.assert_allclose(keys["ap"], reference["ap"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(keys["cmc"], reference["cmc"], rtol=0, atol=1e-12)


def test_keys_place_negative_items_and_minus_zero_below_positive_matches(monkeypatch):
    # Items at -0.0 or below zero read as negative integers: bin 0, before every match.
    calls = keys_calls(monkeypatch)
    monkeypatch.setattr(match_ranks, "KEY_ITEMS_PER_BIN", 0)
    dist = np.array([[0.5, -0.0, -1e-7, 0.25, 0.5, 3.0, 1e-30, 0.75]], dtype=np.float32)
    g_pids = np.array([1, 2, 2, 1, 2, 1, 2, 2])
    case = (dist, np.array([1]), g_pids, np.array([0]), np.ones(8, dtype=np.int64))
    assert_identical(evaluate(case, "keys"), evaluate(case, "grid"))
    reference = naive_evaluate(*case, max_rank=10)
    np.testing.assert_allclose(evaluate(case, "keys")["ap"], reference["ap"], atol=1e-15)
    assert calls


@pytest.mark.parametrize("threads", [2, 3])
def test_a_block_split_over_threads_ranks_exactly_as_one_thread(monkeypatch, threads):
    # The key histogram of a large CPU block runs on `threads` Python threads, one part of the
    # rows each: the same results as one thread, and the caller's torch thread count is kept.
    calls = keys_calls(monkeypatch)
    monkeypatch.setattr(match_ranks, "SPLIT_MIN_ITEMS", 1000)
    case = long_rows_case(np.random.default_rng(5), 40, 3000, 300)
    before = torch.get_num_threads()
    split = evaluate(case, "keys", threads=threads)
    assert torch.get_num_threads() == before
    assert len(calls) == threads  # one call per part
    assert_identical(split, evaluate(case, "keys", threads=1))
    reference = naive_evaluate(*case, max_rank=10)
    np.testing.assert_allclose(split["ap"], reference["ap"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_threads_are_refused(threads):
    from adasp.errors import UserInputError

    with pytest.raises(UserInputError, match="threads must be a positive integer"):
        RankingEvaluator(torch.arange(3), torch.zeros(3), threads=threads)


def test_bad_locate_is_refused():
    from adasp.errors import UserInputError

    with pytest.raises(UserInputError, match="locate"):
        RankingEvaluator(torch.arange(3), torch.zeros(3), locate="sort")


def test_part_workers_are_kept_per_process_and_remade_in_a_forked_child(monkeypatch):
    # The threads are shared and kept (fresh threads per block cost page faults); a child
    # process (another pid) cannot use its parent's threads and makes its own.
    workers = match_ranks.part_workers(2)
    assert match_ranks.part_workers(2) is workers
    assert workers.map(lambda part: part.start, [slice(3, 4), slice(1, 2)]) == [3, 1]
    pool = workers._pool
    assert workers.map(lambda part: part.stop, [slice(0, 5)]) == [5]
    assert workers._pool is pool
    monkeypatch.setattr(match_ranks.os, "getpid", lambda: -1)
    assert workers.map(lambda part: part.stop, [slice(0, 7)]) == [7]
    assert workers._pool is not pool
