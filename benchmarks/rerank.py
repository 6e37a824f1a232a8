"""k-reciprocal re-ranking at MSMT17 test size: time, peak memory and mAP, sparse against dense.

Synthetic 256-d features with identity structure stand in for a model's output: 3,060
identities (MSMT17's test split), each a random centre plus a per-(identity, camera) offset
(the same person looks different in each of 15 cameras) plus per-image noise, L2-normalised.
Queries and gallery follow MSMT17's sizes (11,659 x 82,161); mAP and Rank-1 use the Market
protocol (gallery items of the query's identity *and* camera are dropped).

Each measurement runs in a fresh subprocess so that peak memory is its own: peak RSS is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end minus its value right after the
imports (so it includes the features, the evaluation and the re-ranking).

    python benchmarks/rerank.py                 # MSMT17 size + dense comparison (1,000 x 5,000)
    python benchmarks/rerank.py --quick         # a tenth of the sizes, for a smoke run
    python benchmarks/rerank.py --skip-large    # only the dense/sparse/loop comparison
    python benchmarks/rerank.py --end-to-end    # also evaluate_features(..., rerank=True)
    python benchmarks/rerank.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adasp.evaluation.reranking import (
    RERANK_METRICS,
    feature_distances,
    rerank,
    reranked_distance_chunks,
)

MSMT17 = {"ids": 3060, "queries": 11659, "gallery": 82161, "cameras": 15}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------------------
# synthetic data and a vectorised evaluator


def synthetic_split(ids, queries, gallery, cameras, dim, seed):
    """Features and labels of a synthetic test split with identity and camera structure.

    Returns:
        ``(query_features (Q, dim) float32, gallery_features (G, dim) float32,
        query_ids, query_cams, gallery_ids, gallery_cams)``, the last four int64 ``(Q,)`` /
        ``(G,)`` tensors.
    """
    gen = torch.Generator().manual_seed(seed)

    def spread(total):
        # every identity gets floor or ceil of total / ids items, in a random order
        counts = torch.full((ids,), total // ids, dtype=torch.int64)
        counts[torch.randperm(ids, generator=gen)[: total % ids]] += 1
        return torch.repeat_interleave(torch.arange(ids), counts)

    query_ids, gallery_ids = spread(queries), spread(gallery)
    centres = torch.randn(ids, dim, generator=gen)
    camera_offsets = 1.1 * torch.randn(ids, cameras, dim, generator=gen)
    camera_style = 0.5 * torch.randn(cameras, dim, generator=gen)
    # each identity is seen by 2 to 6 of the cameras
    seen = torch.argsort(torch.rand(ids, cameras, generator=gen), dim=1)
    num_seen = torch.randint(2, 7, (ids,), generator=gen)

    def draw(pids):
        slot = (torch.rand(pids.numel(), generator=gen) * num_seen[pids]).long()
        cams = seen[pids, slot]
        noise = 1.4 * torch.randn(pids.numel(), dim, generator=gen)
        feats = centres[pids] + camera_offsets[pids, cams] + camera_style[cams] + noise
        return torch.nn.functional.normalize(feats, dim=1), cams

    query_features, query_cams = draw(query_ids)
    gallery_features, gallery_cams = draw(gallery_ids)
    return query_features, gallery_features, query_ids, query_cams, gallery_ids, gallery_cams


def identity_members(gallery_ids, num_ids):
    """``(num_ids, most)`` int64 gallery indices of each identity, padded with -1."""
    order = torch.argsort(gallery_ids, stable=True)
    counts = torch.bincount(gallery_ids, minlength=num_ids)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(gallery_ids.numel()) - starts[gallery_ids[order]]
    members = torch.full((num_ids, max(int(counts.max()), 1)), -1, dtype=torch.int64)
    members[gallery_ids[order], slot] = order
    return members.to(gallery_ids.device)


def average_precision_block(distances, query_ids, query_cams, members, gallery_cams):
    """AP and Rank-1 hit of a block of queries, Market protocol, without sorting the gallery.

    The k-th nearest match's rank is k plus the number of valid non-matches nearer than it.
    Every gallery item is bucketed among the query's sorted match distances
    (``searchsorted``), the identity's own items (matches and same-camera junk, from
    ``members``) are taken back out, and a cumulative sum gives the counts: O(B x G log m)
    with no B x G sort and no B x G masks.

    Returns:
        ``(ap (B,), rank1 (B,), evaluated (B,) bool)``; queries without a valid match are
        not evaluated.
    """
    rows = torch.arange(distances.shape[0], device=distances.device)[:, None]
    own = members[query_ids]  # (B, most) this identity's gallery items, -1 padded
    present = own >= 0
    own_d = distances[rows, own.clamp_min(0)]
    match = present & (gallery_cams[own.clamp_min(0)] != query_cams[:, None])
    num_match = match.sum(1)
    width = own.shape[1]
    match_sorted = torch.sort(torch.where(match, own_d, float("inf")), dim=1).values
    hist = torch.zeros(distances.shape[0], width + 1, device=distances.device)
    bucket = torch.searchsorted(match_sorted, distances, right=True)
    hist.scatter_add_(1, bucket, torch.ones(1, device=distances.device).expand_as(distances))
    own_bucket = torch.searchsorted(match_sorted, own_d, right=True)
    hist.scatter_add_(1, own_bucket, -present.float())  # the identity's items are not "others"
    others_before = torch.cumsum(hist[:, :width], 1)
    k = torch.arange(1, width + 1, device=distances.device, dtype=torch.float32)
    precision = k / (others_before + k)
    counted = k[None, :] <= num_match[:, None]
    ap = (precision * counted).sum(1) / num_match.clamp_min(1)
    rank1 = (others_before[:, 0] == 0).float()
    return ap, rank1, num_match > 0


def evaluate_chunks(chunks, query_ids, query_cams, gallery_ids, gallery_cams):
    """mAP and Rank-1 (percent) over ``(slice, distances)`` blocks, and seconds spent here."""
    members = identity_members(gallery_ids, int(max(query_ids.max(), gallery_ids.max())) + 1)
    aps, rank1s, seconds, cpu_seconds = [], [], 0.0, 0.0
    for rows, distances in chunks:
        start, cpu_start = time.perf_counter(), time.process_time()
        ap, rank1, ok = average_precision_block(
            distances, query_ids[rows], query_cams[rows], members, gallery_cams
        )
        aps.append(ap[ok])
        rank1s.append(rank1[ok])
        seconds += time.perf_counter() - start
        cpu_seconds += time.process_time() - cpu_start
    mean_ap = 100.0 * float(torch.cat(aps).mean())
    return mean_ap, 100.0 * float(torch.cat(rank1s).mean()), seconds, cpu_seconds


def plain_distance_chunks(query, gallery, chunk):
    """Cosine distances, a block of queries at a time (the no-re-ranking baseline)."""
    gallery_t = gallery.T.contiguous()
    for start in range(0, query.shape[0], chunk):
        stop = min(query.shape[0], start + chunk)
        yield slice(start, stop), RERANK_METRICS["cosine"].distances(query[start:stop], gallery_t)


# ---------------------------------------------------------------------------------------------
# the peers' approach: per-item Python loops over dense N x N matrices


def loop_rerank(q_g, q_q, g_g, k1=20, k2=6, lambda_value=0.3):
    """Re-ranking as the usual public ports do it: full argsort, dense V, per-item loops.

    Same algorithm and conventions as :func:`adasp.evaluation.reranking.rerank`, written the
    way the widely copied implementations are structured, to measure what they cost.
    """
    num_query = q_g.shape[0]
    full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32) ** 2
    original = np.ascontiguousarray((full / full.max(axis=0)).T)
    del full
    n = original.shape[0]
    ranked = np.argsort(original, axis=1, kind="stable").astype(np.int32)
    half = int(np.around(k1 / 2.0))

    def reciprocal(i, k):
        forward = ranked[i, : k + 1]
        return forward[(ranked[forward, : k + 1] == i).any(1)]

    encoding = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        core = reciprocal(i, k1)
        expanded = [core]
        for candidate in core:
            candidate_set = reciprocal(candidate, half)
            if len(np.intersect1d(candidate_set, core)) > 2.0 / 3.0 * len(candidate_set):
                expanded.append(candidate_set)
        members = np.unique(np.concatenate(expanded))
        weights = np.exp(-original[i, members])
        encoding[i, members] = weights / weights.sum()
    if k2 != 1:
        expanded_encoding = np.zeros_like(encoding)
        for i in range(n):
            expanded_encoding[i] = encoding[ranked[i, :k2]].mean(axis=0)
        encoding = expanded_encoding
    inverted = [np.nonzero(encoding[:, c])[0] for c in range(n)]
    jaccard = np.zeros((num_query, n), dtype=np.float32)
    for i in range(num_query):
        shared = np.zeros(n, dtype=np.float32)
        for c in np.nonzero(encoding[i])[0]:
            rows = inverted[c]
            shared[rows] += np.minimum(encoding[i, c], encoding[rows, c])
        jaccard[i] = 1.0 - shared / (2.0 - shared)
    final = jaccard * (1.0 - lambda_value) + original[:num_query] * lambda_value
    return final[:, num_query:]


# ---------------------------------------------------------------------------------------------
# one measurement per subprocess


def child(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    base_rss = peak_rss_mib()
    device = torch.device(args.device)
    ids = max(1, round(MSMT17["ids"] * args.queries / MSMT17["queries"]))
    split = synthetic_split(ids, args.queries, args.gallery, MSMT17["cameras"], args.dim, 0)
    query, gallery, *labels = (t.to(device) for t in split)
    result: dict = {"mode": args.child, "queries": args.queries, "gallery": args.gallery}
    # warm-up on a tiny problem: the first call of several torch operations costs seconds of
    # one-off initialisation, which would swamp the small comparison
    warm_q, warm_g = query[:20], gallery[:60]
    list(reranked_distance_chunks(warm_q, warm_g))
    warm_blocks = [
        feature_distances(a, b).cpu().numpy()
        for a, b in [(warm_q, warm_g), (warm_q, warm_q), (warm_g, warm_g)]
    ]
    rerank(*warm_blocks)
    loop_rerank(*warm_blocks)
    saved = []

    def keep(stream):
        for rows, distances in stream:
            if args.save:
                saved.append(distances.cpu().numpy())
            yield rows, distances

    if args.child == "sparse" and args.with_baseline:
        start = time.perf_counter()
        result["map_plain"], result["rank1_plain"], *_ = evaluate_chunks(
            plain_distance_chunks(query, gallery, 256), *labels
        )
        result["plain_s"] = time.perf_counter() - start
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.child == "evaluate":
        # the library's own end-to-end path: re-ranked blocks straight into its evaluator
        from adasp.evaluation import evaluate_features

        metrics = evaluate_features(query, gallery, *labels[::2], *labels[1::2], rerank=True)
        result["map"] = 100.0 * metrics["mAP"]
        result["rank1"] = 100.0 * float(metrics["cmc"][0])
        result["seconds"] = time.perf_counter() - start
        result["cpu_s"] = time.process_time() - cpu_start
        result["peak_rss_mib"] = peak_rss_mib() - base_rss
        print(json.dumps(result))
        return
    if args.child == "sparse":
        chunks = keep(reranked_distance_chunks(query, gallery, device=device))
    else:
        blocks = (
            feature_distances(query, gallery).cpu().numpy(),
            feature_distances(query, query).cpu().numpy(),
            feature_distances(gallery, gallery).cpu().numpy(),
        )
        method = rerank if args.child == "dense" else loop_rerank
        distances = torch.from_numpy(method(*blocks)).to(device)
        del blocks
        chunks = keep([(slice(0, args.queries), distances)])
    result["map"], result["rank1"], eval_seconds, eval_cpu = evaluate_chunks(chunks, *labels)
    # re-ranking time: everything but the evaluator (for the sparse path that includes
    # computing the distances, which happens as the blocks are consumed); CPU seconds (all
    # threads) are less sensitive than wall time to other jobs sharing the cores
    result["seconds"] = time.perf_counter() - start - eval_seconds
    result["cpu_s"] = time.process_time() - cpu_start - eval_cpu
    result["eval_s"] = eval_seconds
    result["peak_rss_mib"] = peak_rss_mib() - base_rss
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    if args.save:
        np.save(args.save, np.concatenate(saved))
    print(json.dumps(result))


def run_child(args: argparse.Namespace, mode: str, queries: int, gallery: int, **extra) -> dict:
    command = [
        sys.executable, __file__, "--child", mode, "--queries", str(queries),
        "--gallery", str(gallery), "--device", args.device, "--dim", str(args.dim),
        "--threads", str(args.threads),
    ]  # fmt: skip
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{mode} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of every size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--skip-large", action="store_true", help="skip the MSMT17-size run")
    parser.add_argument("--skip-loop", action="store_true", help="skip the loop-based run")
    parser.add_argument("--compare", type=int, nargs=2, default=[1000, 5000], metavar=("Q", "G"))
    # internal: one measurement in this process
    parser.add_argument(
        "--end-to-end",
        action="store_true",
        help="also time adasp.evaluation.evaluate_features(..., rerank=True) at MSMT17 size",
    )
    parser.add_argument(
        "--child", choices=["sparse", "dense", "loop", "evaluate"], help=argparse.SUPPRESS
    )
    parser.add_argument("--queries", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--gallery", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--with-baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    scale = 0.1 if args.quick else 1.0
    print(
        f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"dim={args.dim}; k1=20 k2=6 lambda=0.3, cosine; peak RSS = ru_maxrss at the end "
        "minus ru_maxrss after imports, in a fresh process"
    )
    if not args.skip_large:
        q, g = round(MSMT17["queries"] * scale), round(MSMT17["gallery"] * scale)
        r = run_child(args, "sparse", q, g, with_baseline=True)
        n = q + g
        print(f"\nMSMT17-size split: {q:,} queries x {g:,} gallery ({n:,} items)")
        print("| path | mAP % | Rank-1 % | seconds | CPU s | peak RSS MiB |")
        print("|---|---:|---:|---:|---:|---:|")
        print(f"| no re-ranking | {r['map_plain']:.2f} | {r['rank1_plain']:.2f} "
              f"| {r['plain_s']:.1f} | | |")  # fmt: skip
        print(f"| sparse re-ranking | {r['map']:.2f} | {r['rank1']:.2f} | {r['seconds']:.1f} "
              f"| {r['cpu_s']:.1f} | {r['peak_rss_mib']:.0f} |")  # fmt: skip
        print(
            f"(seconds exclude the evaluator: {r['eval_s']:.1f} s for the re-ranked mAP; "
            "the no-re-ranking row is distances + evaluator)"
        )
        if args.end_to_end:
            e = run_child(args, "evaluate", q, g)
            print(f"| evaluate_features(rerank=True) | {e['map']:.2f} | {e['rank1']:.2f} "
                  f"| {e['seconds']:.1f} | {e['cpu_s']:.1f} | {e['peak_rss_mib']:.0f} |")  # fmt: skip
        if "peak_cuda_mib" in r:
            print(f"peak CUDA memory: {r['peak_cuda_mib']:.0f} MiB")
        dense_gib = 4 * n * n / 2**30
        print(
            f"targets: <= 600 s, <= 2048 MiB. A dense float32 {n:,} x {n:,} matrix alone is "
            f"{dense_gib:.1f} GiB; the loop-based ports hold about four of them."
        )

    q, g = (max(1, round(v * scale)) for v in args.compare)
    print(f"\nDense vs sparse at {q:,} x {g:,}:")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        modes = ["sparse", "dense"] + ([] if args.skip_loop else ["loop"])
        for mode in modes:
            runs[mode] = run_child(args, mode, q, g, save=Path(tmp) / f"{mode}.npy")
            runs[mode]["distances"] = np.load(Path(tmp) / f"{mode}.npy")
    print("| path | mAP % | Rank-1 % | seconds | CPU s | peak RSS MiB | max abs diff to dense |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, r in runs.items():
        diff = float(np.abs(r["distances"] - runs["dense"]["distances"]).max())
        print(f"| {mode} | {r['map']:.2f} | {r['rank1']:.2f} | {r['seconds']:.2f} "
              f"| {r['cpu_s']:.2f} | {r['peak_rss_mib']:.0f} | {diff:.2e} |")  # fmt: skip
    same_order = np.mean(
        np.argsort(runs["sparse"]["distances"], axis=1, kind="stable")[:, :10]
        == np.argsort(runs["dense"]["distances"], axis=1, kind="stable")[:, :10]
    )
    print(f"top-10 ranking identical between sparse and dense: {100 * same_order:.3f}% of slots")
    if not math.isfinite(runs["sparse"]["map"]):
        sys.exit("sparse mAP is not finite")


if __name__ == "__main__":
    main()
