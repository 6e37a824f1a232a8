"""Ranking-metric speed and memory: adasp against the full-argsort evaluator of the peers.

1. Market-1501 size (3,368 queries x 15,913 gallery, 751 identities incl. distractors, 6
   cameras), from a distance matrix: a full-argsort evaluator written here (stable numpy
   argsort of every row, then a vectorised scan: the peers' algorithm) against
   ``evaluate_ranking``, in the same process, on cosine distances of trained-like, weak and
   untrained (random) synthetic features. The results must be identical (CMC exactly,
   per-query AP and INP to 1e-12). adasp runs twice on each matrix, interleaved: with the
   integer-key histogram (``locate="keys"``, the default) and with the float grid it
   replaced (``locate="grid"``, "before"). Where the ``fastreid`` wheel can be fetched with
   ``pip download fastreid==1.4.0 --no-deps`` and Cython is installed, its ``rank_cy.pyx``
   is compiled into a temporary folder and its ``evaluate_cy`` timed on the same matrices
   (results compared: CMC to 1e-6, mAP/mINP to 1e-5, its float32 arithmetic); else its
   column says why not.
2. VERI-WILD-large size (10,000 queries x 138,517 gallery, 256-d features, 10,000 identities,
   174 cameras): ``evaluate_features`` in a child process; wall time and peak resident memory
   during the call (the child's VmHWM, reset just before it; the child holds only Python,
   torch, the features and the evaluation). Features are "trained-like" (identity centre
   plus Gaussian noise) or "untrained" (random).
3. ``--search``: exact top-k search, torch against faiss, by gallery size.

    python benchmarks/evaluation.py [--quick] [--threads 2] [--search] [--skip-market]
                                    [--skip-veriwild] [--veriwild-features ...] [--no-fastreid]

On a machine whose cores are busy with other processes, ``--threads 1`` measures the work
itself: with 2 threads every torch operation can wait for the second thread to be scheduled.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
import torch

# ------------------------------------------------------------------ synthetic test sets


def identities(rng, num_q, num_g, num_ids, num_cams, distractors=0):
    """Query and gallery identities/cameras: every query identity has gallery images, each
    query's identity appears under several cameras; ``distractors`` gallery items of pid 0."""
    q_pids = np.sort(rng.integers(1, num_ids + 1, num_q))
    per_id = num_g - distractors
    g_pids = np.concatenate(
        [np.arange(1, num_ids + 1), rng.integers(1, num_ids + 1, per_id - num_ids)]
    )
    g_pids = np.concatenate([g_pids, np.zeros(distractors, dtype=np.int64)])
    rng.shuffle(g_pids)
    q_cams = rng.integers(0, num_cams, num_q)
    g_cams = rng.integers(0, num_cams, num_g)
    return q_pids, g_pids, q_cams, g_cams


def model_features(rng, pids, centres, noise, chunk=8192):
    """Embeddings from identity centres plus Gaussian noise (pid 0: random distractors)."""
    dim = centres.shape[1]
    out = np.empty((len(pids), dim), dtype=np.float32)
    for start in range(0, len(pids), chunk):
        p = pids[start : start + chunk]
        block = noise * rng.standard_normal((len(p), dim), dtype=np.float32)
        block += np.where(
            (p > 0)[:, None],
            centres[np.maximum(p - 1, 0)],
            rng.standard_normal((len(p), dim), dtype=np.float32),
        )
        out[start : start + chunk] = block
    return out


# ------------------------------------------------------------ the peers' full-argsort evaluator


def argsort_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, block=128):
    """Full stable argsort of every row, then the usual scan, vectorised over blocks of rows.

    Returns per-query AP, INP, 0-based rank of the first match (NaN/-1 when skipped) and the
    CMC counts.
    """
    num_q = distmat.shape[0]
    ap = np.full(num_q, np.nan)
    inp = np.full(num_q, np.nan)
    first = np.full(num_q, -1)
    for start in range(0, num_q, block):
        rows = slice(start, min(start + block, num_q))
        order = np.argsort(distmat[rows], axis=1, kind="stable")
        pids, cams = g_pids[order], g_camids[order]
        match = pids == q_pids[rows, None]
        keep = ~(match & (cams == q_camids[rows, None])) & (pids != -1)
        good = match & keep
        position = np.cumsum(keep, axis=1)  # 1-based rank among kept items
        hits = np.cumsum(good, axis=1)
        num = hits[:, -1]
        valid = num > 0
        precision = np.where(good, hits / np.maximum(position, 1), 0.0)
        block_ap = precision.sum(1) / np.maximum(num, 1)
        first_col = np.argmax(good, axis=1)
        last_col = good.shape[1] - 1 - np.argmax(good[:, ::-1], axis=1)
        take = np.arange(good.shape[0])
        block_first = position[take, first_col] - 1
        block_inp = num / position[take, last_col]
        ap[rows] = np.where(valid, block_ap, np.nan)
        inp[rows] = np.where(valid, block_inp, np.nan)
        first[rows] = np.where(valid, block_first, -1)
    valid = first >= 0
    cmc = np.cumsum(
        np.bincount(np.minimum(first[valid], max_rank), minlength=max_rank + 1)[:max_rank]
    )
    return ap, inp, first, cmc / max(valid.sum(), 1)


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def build_fastreid_evaluator(folder: str):
    """fast-reid's compiled ``evaluate_cy``, built in ``folder``; or the reason it is not."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "fastreid==1.4.0",
            "--no-deps",
            "-q",
            "-d",
            folder,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = glob.glob(os.path.join(folder, "fastreid-*.whl"))
    if done.returncode != 0 or not wheels:
        return None, "pip download fastreid==1.4.0 failed"
    with zipfile.ZipFile(wheels[0]) as wheel:
        source = wheel.read("fastreid/evaluation/rank_cylib/rank_cy.pyx")
    with open(os.path.join(folder, "rank_cy.pyx"), "wb") as out:
        out.write(source)
    setup = (
        "import numpy; from setuptools import Extension, setup; "
        "from Cython.Build import cythonize; "
        "setup(name='rank_cy', script_args=['build_ext', '--inplace', '-q'], "
        "ext_modules=cythonize([Extension('rank_cy', ['rank_cy.pyx'], "
        "include_dirs=[numpy.get_include()])], language_level=3, quiet=True))"
    )
    done = subprocess.run(
        [sys.executable, "-c", setup], cwd=folder, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        reason = "Cython is not installed" if "Cython" in done.stderr else "compilation failed"
        return None, reason
    sys.path.insert(0, folder)
    try:
        return importlib.import_module("rank_cy").evaluate_cy, ""
    finally:
        sys.path.remove(folder)


def adasp_evaluate(dist, q_pids, g_pids, q_cams, g_cams, locate):
    """``evaluate_ranking`` as it is now (``locate="keys"``, blocks split over the cores) or as
    it was before (``locate="grid"``, one block at a time), with the default block size."""
    from adasp.evaluation.inputs import resolve_chunk_size
    from adasp.evaluation.metrics import RankingEvaluator

    threads = 1 if locate == "grid" else None
    evaluator = RankingEvaluator(g_pids, g_cams, 50, locate=locate, threads=threads)
    step = resolve_chunk_size(None, dist.shape[1])
    for begin in range(0, dist.shape[0], step):
        rows = slice(begin, begin + step)
        evaluator.add(dist[rows], q_pids[rows], q_cams[rows])
    return evaluator.result()


def market_benchmark(scale: float, repeats: int, fastreid: bool) -> list[str]:
    from adasp.evaluation import pairwise_distances

    num_q, num_g = int(3368 * scale), int(15913 * scale)
    num_ids, distractors = max(int(750 * scale), 2), int(2798 * scale)
    rng = np.random.default_rng(0)
    q_pids, g_pids, q_cams, g_cams = identities(rng, num_q, num_g, num_ids, 6, distractors)
    centres = rng.standard_normal((num_ids, 256), dtype=np.float32)
    evaluate_cy, why_not = None, "--no-fastreid"
    folder = tempfile.TemporaryDirectory(prefix="rank_cy-")
    if fastreid:
        evaluate_cy, why_not = build_fastreid_evaluator(folder.name)
    print(f"\n## Market-1501 size: {num_q} queries x {num_g} gallery, float32 cosine distances")
    print(
        f"adasp: best of {repeats} runs each, before (locate=grid, one block at a time) and now "
        "(locate=keys, each block split over the threads) run in pairs; 'now vs before' is the "
        "ratio of the best times, 'paired median' the median of the pairs' ratios; "
        "fast-reid: its compiled evaluate_cy, one run"
        + ("" if evaluate_cy else f" (not run: {why_not})")
    )
    header = (
        "| matrix | mAP | R1 | mINP | argsort evaluator s | fast-reid Cython s | adasp before s "
        "| adasp now s | now vs before | paired median | now vs argsort | now vs fast-reid "
        "| identical |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    print(lines[0])
    print(lines[1])
    for label, noise in (
        ("trained-like (noise 1.6)", 1.6),
        ("medium (noise 2.0)", 2.0),
        ("weak (noise 2.4)", 2.4),
        ("untrained (random)", None),
    ):
        if noise is None:
            q = rng.standard_normal((num_q, 256), dtype=np.float32)
            g = rng.standard_normal((num_g, 256), dtype=np.float32)
        else:
            q = model_features(rng, q_pids, centres, noise)
            g = model_features(rng, g_pids, centres, noise)
        dist = pairwise_distances(q, g, "cosine").numpy()
        t_ref, (ap, inp, first, cmc) = timed(
            lambda d=dist: argsort_evaluate(d, q_pids, g_pids, q_cams, g_cams), 1
        )
        runs: dict[str, list[float]] = {"grid": [], "keys": []}
        results = {}
        for repeat in range(repeats):
            # Before and now back to back, their order alternating: a slow spell of a shared
            # machine then slows both runs of a pair, and the pair's ratio stays readable.
            for locate in ("grid", "keys") if repeat % 2 == 0 else ("keys", "grid"):
                t, results[locate] = timed(
                    lambda d=dist, m=locate: adasp_evaluate(d, q_pids, g_pids, q_cams, g_cams, m),
                    1,
                )
                runs[locate].append(t)
        times = {locate: min(t) for locate, t in runs.items()}
        paired = statistics.median(b / a for b, a in zip(runs["grid"], runs["keys"], strict=True))
        ours = results["keys"]
        valid = first >= 0
        identical = True
        ap_diff = 0.0
        for result in results.values():
            same_valid = np.array_equal(~np.isnan(result["ap"]), valid)
            ap_diff = max(
                ap_diff, float(np.nanmax(np.abs(result["ap"] - ap))) if valid.any() else 0.0
            )
            inp_diff = float(np.nanmax(np.abs(result["inp"] - inp))) if valid.any() else 0.0
            identical &= (
                same_valid
                and np.array_equal(result["cmc"], cmc)
                and ap_diff < 1e-12
                and inp_diff < 1e-12
            )
        cy_cell = cy_ratio = "-"
        if evaluate_cy is not None:
            t_cy, (cy_cmc, cy_ap, cy_inp) = timed(
                lambda d=dist: evaluate_cy(d, q_pids, g_pids, q_cams, g_cams, 50), 1
            )
            cy_cell, cy_ratio = f"{t_cy:.3f}", f"{t_cy / times['keys']:.1f}x"
            identical &= bool(
                np.allclose(cy_cmc, ours["cmc"], rtol=0, atol=1e-6)
                and abs(float(np.mean(cy_ap)) - ours["mAP"]) < 1e-5
                and abs(float(np.mean(cy_inp)) - ours["mINP"]) < 1e-5
            )
        line = (
            f"| {label} | {ours['mAP']:.4f} | {ours['cmc'][0]:.4f} | {ours['mINP']:.4f} | "
            f"{t_ref:.3f} | {cy_cell} | {times['grid']:.3f} | {times['keys']:.3f} | "
            f"{times['grid'] / times['keys']:.2f}x | {paired:.2f}x | {t_ref / times['keys']:.1f}x | "
            f"{cy_ratio} | "
            f"{'yes' if identical else 'NO'} (max |dAP| {ap_diff:.1e}) |"
        )
        print(line, flush=True)
        lines.append(line)
        if not identical:
            raise SystemExit("results differ between the evaluators")
    folder.cleanup()
    return lines


# ---------------------------------------------------------------- VERI-WILD large, child


CHILD = r"""
import json, sys, time
import numpy as np, torch
sys.path.insert(0, {bench_dir!r})
from evaluation import identities, model_features
from adasp.evaluation import evaluate_features
torch.set_num_threads({threads})

def status_mb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024

num_q, num_g, noise = {num_q}, {num_g}, {noise}
rng = np.random.default_rng(1)
num_ids = num_q
q_pids = np.arange(1, num_q + 1)
_, g_pids, _, g_cams = identities(rng, num_q, num_g, num_ids, 174)
q_cams = rng.integers(0, 174, num_q)
centres = rng.standard_normal((num_ids, 256), dtype=np.float32)
if noise is None:
    query = rng.standard_normal((num_q, 256), dtype=np.float32)
    gallery = rng.standard_normal((num_g, 256), dtype=np.float32)
else:
    query = model_features(rng, q_pids, centres, noise)
    gallery = model_features(rng, g_pids, centres, noise)
del centres
query, gallery = torch.from_numpy(query), torch.from_numpy(gallery)
# Reset the peak (VmHWM) to the current RSS, so that the data generation's temporaries do
# not mask the evaluation's own peak. (ru_maxrss is no use here: after fork + exec it keeps
# the parent's resident size.)
generation_peak_mb = status_mb("VmHWM")
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")
before_mb = status_mb("VmRSS")
start = time.perf_counter()
result = evaluate_features(query, gallery, q_pids, g_pids, q_cams, g_cams)
seconds = time.perf_counter() - start
print(json.dumps(dict(
    seconds=seconds, rss_before_mb=before_mb,
    peak_mb=status_mb("VmHWM"),
    lifetime_peak_mb=max(generation_peak_mb, status_mb("VmHWM")),
    mAP=result["mAP"], rank1=float(result["cmc"][0]), mINP=result["mINP"],
    valid=result["num_valid_queries"])))
"""


def veriwild_benchmark(scale: float, threads: int, features: list[str]) -> None:
    num_q, num_g = int(10000 * scale), int(138517 * scale)
    print(f"\n## VERI-WILD-large size: evaluate_features, {num_q} x {num_g}, 256-d, cosine")
    print(
        "(child process; RSS before = Python + torch + features; peak = VmHWM of the child, "
        "reset just before evaluate_features; whole-life peak incl. data generation also shown)"
    )
    print(
        "| features | mAP | R1 | mINP | wall s | RSS before MB | peak RSS MB "
        "| peak - before MB | whole-life peak MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in features:
        noise = {"trained-like": 1.6, "untrained": None}[name]
        code = CHILD.format(
            bench_dir=os.path.dirname(os.path.abspath(__file__)),
            threads=threads,
            num_q=num_q,
            num_g=num_g,
            noise=noise,
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            print(done.stderr)
            raise SystemExit("the VERI-WILD child process failed")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"| {name} | {r['mAP']:.4f} | {r['rank1']:.4f} | {r['mINP']:.4f} | {r['seconds']:.1f} | "
            f"{r['rss_before_mb']:.0f} | {r['peak_mb']:.0f} | "
            f"{r['peak_mb'] - r['rss_before_mb']:.0f} | {r['lifetime_peak_mb']:.0f} |"
        )


def search_benchmark(quick: bool) -> None:
    from adasp.evaluation.search import faiss_available, search

    if not faiss_available():
        print("\nfaiss is not installed: search benchmark skipped")
        return
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    rng = np.random.default_rng(2)
    num_q = 500 if quick else 2000
    print(f"\n## Exact top-10 search, {num_q} queries, 256-d, cosine")
    print("| gallery | torch s | faiss s | queries with the same top-10 |")
    print("|---:|---:|---:|---:|")
    for num_g in (1000, 10000, 50000) if quick else (1000, 10000, 50000, 138517):
        q = rng.standard_normal((num_q, 256), dtype=np.float32)
        g = rng.standard_normal((num_g, 256), dtype=np.float32)
        t_torch, (_, i_torch) = timed(lambda q=q, g=g: search(q, g, 10, backend="torch"), 2)
        t_faiss, (_, i_faiss) = timed(lambda q=q, g=g: search(q, g, 10, backend="faiss"), 2)
        same = np.mean(np.all(i_torch == i_faiss, axis=1))  # near-ties may swap neighbours
        print(f"| {num_g} | {t_torch:.3f} | {t_faiss:.3f} | {same:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats of adasp (best)")
    parser.add_argument("--skip-market", action="store_true")
    parser.add_argument("--skip-veriwild", action="store_true")
    parser.add_argument(
        "--veriwild-features",
        nargs="+",
        default=["trained-like", "untrained"],
        choices=["trained-like", "untrained"],
    )
    parser.add_argument("--search", action="store_true", help="also time torch vs faiss search")
    parser.add_argument(
        "--no-fastreid", action="store_true", help="do not fetch and compile fast-reid's evaluator"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, {args.threads} torch threads, "
        f"{os.cpu_count()} CPUs visible"
    )
    scale = 0.25 if args.quick else 1.0
    if not args.skip_market:
        market_benchmark(scale, args.repeats, not args.no_fastreid)
    if not args.skip_veriwild:
        veriwild_benchmark(0.1 if args.quick else 1.0, args.threads, args.veriwild_features)
    if args.search:
        search_benchmark(args.quick)


if __name__ == "__main__":
    main()
