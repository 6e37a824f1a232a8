"""Size and load time of the results page (``adasp evaluate --html``) at Market-1501 size.

Synthetic but Market-shaped: 3,368 queries and 19,732 gallery items of 751 identities over 6
cameras, small generated images (64 x 128 PNGs, one per query and per gallery item a query
shows), features with identity structure; the page is written by the same code as
``adasp evaluate --html`` and opened in headless Chromium, which reports when the first page
of rows is drawn and how long sorting and filtering the whole query list take.

    python benchmarks/results_page.py                 # Market size
    python benchmarks/results_page.py --queries 500   # smaller
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from adasp.evaluation import evaluate_features
from adasp.evaluation.query_results import KEPT_RANKS, QueryResults


def synthetic_query_results(
    folder: Path,
    num_queries: int,
    num_gallery: int,
    num_ids: int,
    num_cams: int = 6,
    *,
    seed: int = 0,
    noise: float = 1.2,
    images: bool = True,
) -> tuple[QueryResults, dict]:
    """A Market-like evaluation of random features with identity structure: its per-query
    results (images under ``folder`` for every query and every gallery item a query shows)
    and the evaluator's full result."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, 32))
    q_pids = np.arange(num_queries) % num_ids
    g_pids = np.concatenate([np.arange(num_ids), rng.integers(0, num_ids, num_gallery - num_ids)])
    q_cams = rng.integers(0, num_cams, num_queries)
    g_cams = (
        q_cams[g_pids % num_queries] + 1 + rng.integers(0, num_cams - 1, num_gallery)
    ) % num_cams
    q_feat = centres[q_pids] + noise * rng.normal(size=(num_queries, 32))
    g_feat = centres[g_pids] + noise * rng.normal(size=(num_gallery, 32))
    q_paths = [
        str(folder / "query" / f"{p:04d}_c{c + 1}s1_{i:06d}_00.png")
        for i, (p, c) in enumerate(zip(q_pids, q_cams, strict=True))
    ]
    g_paths = [
        str(folder / "gallery" / f"{p:04d}_c{c + 1}s1_{i:06d}_00.png")
        for i, (p, c) in enumerate(zip(g_pids, g_cams, strict=True))
    ]
    result = evaluate_features(
        torch.as_tensor(q_feat, dtype=torch.float32),
        torch.as_tensor(g_feat, dtype=torch.float32),
        q_pids,
        g_pids,
        q_cams,
        g_cams,
        ranked_topk=KEPT_RANKS,
    )

    def samples(paths, pids, cams):
        return [
            SimpleNamespace(path=p, pid=int(i), camid=int(c))
            for p, i, c in zip(paths, pids, cams, strict=True)
        ]

    dataset = SimpleNamespace(
        query=samples(q_paths, q_pids, q_cams),
        gallery=samples(g_paths, g_pids, g_cams),
        camera_filter=True,
    )
    queries = QueryResults.from_evaluation("market-like", result, dataset)
    if images:
        shown = np.unique(queries.ranked[queries.ranked >= 0])
        colours = rng.integers(0, 255, (num_ids, 3))
        for paths, pids, which in ((q_paths, q_pids, range(num_queries)), (g_paths, g_pids, shown)):
            for i in which:
                write_person(Path(paths[i]), colours[pids[i]], i)
    return queries, result


def write_person(path: Path, colour: np.ndarray, number: int) -> None:
    """A 64 x 128 PNG: a coloured figure on a grey background, a little different each time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((128, 64, 3), 180, dtype=np.uint8)
    top = 10 + number % 7
    pixels[top : top + 100, 18:46] = colour
    pixels[top : top + 22, 24:40] = (230, 190, 160)
    Image.fromarray(pixels).save(path)


def find_browser() -> tuple[str, str] | None:
    """``(chromium binary, chromedriver)`` where both are installed, else None."""
    binary = next(
        (
            shutil.which(n)
            for n in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(n)
        ),
        None,
    )
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


def open_browser(width: int = 1400, height: int = 1000):
    """A headless Chromium driven by selenium through the installed chromedriver (no download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise RuntimeError(
            "no chromium and chromedriver found: apt-get install chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", "--allow-file-access-from-files"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=found[1]), options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=3368)
    parser.add_argument("--gallery", type=int, default=19732)
    parser.add_argument("--ids", type=int, default=751)
    parser.add_argument("--topk", type=int, default=10)
    args = parser.parse_args()
    from adasp.evaluation.results_page import write_results_page

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tick = time.perf_counter()
        queries, _ = synthetic_query_results(folder, args.queries, args.gallery, args.ids)
        print(f"synthetic evaluation and images: {time.perf_counter() - tick:.1f} s")
        saved = queries.save(folder / "queries.npz")
        print(f"per-query file (top-{KEPT_RANKS}): {saved.stat().st_size / 1e6:.2f} MB")
        tick = time.perf_counter()
        page = write_results_page(folder / "report.html", [queries], topk=args.topk)
        print(f"page written in {time.perf_counter() - tick:.1f} s: {page.stat().st_size / 1e6:.1f} MB, "
              f"{queries.num_queries} queries, top-{args.topk}")  # fmt: skip
        browser = open_browser()
        try:
            loads = []
            for _ in range(3):
                browser.get(page.as_uri())
                ready = browser.execute_script("return window.adaspReady")
                nav = browser.execute_script(
                    "const t = performance.getEntriesByType('navigation')[0];"
                    "return [t.domContentLoadedEventEnd, t.loadEventEnd];"
                )
                loads.append((ready, *nav))
            for ready, dom, load in loads:
                print(f"load: first rows drawn at {ready:.0f} ms, DOMContentLoaded {dom:.0f} ms, "
                      f"load {load:.0f} ms")  # fmt: skip
            timing = browser.execute_script(
                "const s = document.getElementById('sort'); const t0 = performance.now();"
                "s.value = 'pid'; s.dispatchEvent(new Event('change'));"
                "const t1 = performance.now();"
                "const f = document.getElementById('filter-cam'); f.value = f.options[1].value;"
                "f.dispatchEvent(new Event('change')); const t2 = performance.now();"
                "return [t1 - t0, t2 - t1];"
            )
            print(
                f"sort all queries by identity: {timing[0]:.0f} ms; filter by camera: {timing[1]:.0f} ms"
            )
        finally:
            browser.quit()


if __name__ == "__main__":
    main()
