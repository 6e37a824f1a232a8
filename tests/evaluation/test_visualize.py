"""Ranked-list PNGs and the CMC plot: files exist, are valid PNGs, frames have the right colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adasp.errors import MissingPathError, UserInputError
from adasp.evaluation import evaluate_ranking, plot_cmc, save_ranked_lists
from adasp.evaluation.visualize import BORDER, GAP, MATCH_COLOR, MISMATCH_COLOR


def make_images(folder: Path, count: int, prefix: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}{i}.png"
        Image.new("RGB", (16, 32), (20 * i % 255, 80, 160)).save(path)
        paths.append(str(path))
    return paths


def frame_color(image: Image.Image, cell: int, cell_size=(64, 128)) -> tuple[int, int, int]:
    """Colour of the frame of cell ``cell`` (0 = the query) at its top-left corner."""
    cell_w = cell_size[0] + 2 * BORDER
    x = GAP + cell * (cell_w + GAP) + (2 * GAP if cell > 0 else 0)
    return image.getpixel((x + 1, GAP + 1))


def test_ranked_lists_from_distances(tmp_path):
    q_paths = make_images(tmp_path / "img", 3, "q")
    g_paths = make_images(tmp_path / "img", 6, "g")
    q_pids, g_pids = np.array([1, 2, 3]), np.array([1, 1, 2, 3, 3, 4])
    q_cams, g_cams = np.array([0, 0, 0]), np.array([0, 1, 1, 1, 1, 1])
    # Query 0: g0 is junk (same pid, same camera) and must not be drawn; g1 (match) is 2nd.
    dist = np.array(
        [
            [0.0, 0.2, 0.1, 0.5, 0.6, 0.7],
            [0.3, 0.2, 0.1, 0.5, 0.6, 0.7],
            [0.9, 0.8, 0.7, 0.1, 0.2, 0.3],
        ]
    )
    files = save_ranked_lists(
        q_paths, g_paths, dist, q_pids, g_pids, q_cams, g_cams, tmp_path / "out", 2, topk=3
    )
    assert [f.name for f in files] == ["q0.png", "q2.png"]  # named after the query files
    for file in files:
        with Image.open(file) as image:
            image.verify()
    with Image.open(files[0]) as image:
        image = image.convert("RGB")
        assert frame_color(image, 1) == MISMATCH_COLOR  # g2 (pid 2)
        assert frame_color(image, 2) == MATCH_COLOR  # g1 (pid 1, other camera)
        assert frame_color(image, 3) == MISMATCH_COLOR  # g3
    with Image.open(files[1]) as image:
        image = image.convert("RGB")
        assert [frame_color(image, c) for c in (1, 2, 3)] == [MATCH_COLOR] * 2 + [MISMATCH_COLOR]


def test_ranked_lists_from_ranked_indices_and_chosen_queries(tmp_path):
    q_paths = make_images(tmp_path / "img", 2, "q")
    g_paths = make_images(tmp_path / "img", 4, "g")
    ranked = np.array([[3, 2, 1, 0], [0, 1, 2, 3]])
    files = save_ranked_lists(
        q_paths,
        g_paths,
        ranked,
        [1, 2],
        [1, 2, 2, 1],
        [0, 0],
        [1, 1, 1, 1],
        tmp_path / "out",
        topk=2,
        query_indices=[1],
    )
    assert [f.name for f in files] == ["q1.png"]
    with Image.open(files[0]) as image:
        image = image.convert("RGB")
        assert [frame_color(image, c) for c in (1, 2)] == [MISMATCH_COLOR, MATCH_COLOR]


def test_ranked_lists_on_real_images(pku_subset, tmp_path):
    query = sorted((pku_subset / "query").glob("*/*.png"))[:4]
    gallery = sorted((pku_subset / "gallery").glob("*/*.png"))[:30]
    pid = lambda p: int(p.parent.name)  # noqa: E731
    cam = lambda p: int(p.name.split("_")[0])  # noqa: E731
    rng = np.random.default_rng(0)
    files = save_ranked_lists(
        [str(p) for p in query],
        [str(p) for p in gallery],
        rng.random((len(query), len(gallery))),
        [pid(p) for p in query],
        [pid(p) for p in gallery],
        [cam(p) for p in query],
        [cam(p) for p in gallery],
        tmp_path / "real",
        num_queries=4,
        topk=5,
    )
    assert len(files) == 4 and len(list((tmp_path / "real").glob("*.png"))) == 4
    with Image.open(files[0]) as image:
        assert image.format == "PNG" and image.width > 6 * 64


def test_ranked_list_errors(tmp_path):
    g_paths = make_images(tmp_path / "img", 2, "g")
    args = ([0, 0], [0], [1, 1], tmp_path / "out")
    with pytest.raises(
        MissingPathError, match="does not exist; the ranked lists need the query and gallery images"
    ):
        save_ranked_lists(["missing.png"], g_paths, np.zeros((1, 2)), [0], *args)
    with pytest.raises(UserInputError, match="one column per gallery image"):
        save_ranked_lists(g_paths[:1], g_paths, np.zeros((1, 3)), [0], *args)
    with pytest.raises(UserInputError, match="ranking must be"):
        save_ranked_lists(g_paths, g_paths, np.zeros((1, 2)), [0, 0], *args)


def test_cmc_plot(tmp_path):
    rng = np.random.default_rng(0)
    dist = rng.random((20, 50))
    result = evaluate_ranking(
        dist, rng.integers(0, 5, 20), rng.integers(0, 5, 50), [0] * 20, [1] * 50
    )
    single = plot_cmc(result["cmc"], tmp_path / "cmc.png", label="random")
    several = plot_cmc({"a": result["cmc"], "b": result["cmc"] ** 2}, tmp_path / "two" / "cmc.png")
    for path in (single, several):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300
    with pytest.raises(UserInputError, match="at least one"):
        plot_cmc({}, tmp_path / "none.png")


def test_worst_queries_are_drawn_first_with_the_pages_marks(tmp_path):
    from adasp.evaluation.visual_results import write_visual_results
    from tests.conftest import load_benchmark

    queries, _ = load_benchmark("results_page").synthetic_query_results(tmp_path, 12, 60, 4)
    files = write_visual_results(queries, tmp_path / "out", 0, topk=4, worst=3)
    *lists, cmc = files
    assert cmc.name == "cmc.png" and len(lists) == 3
    worst = queries.worst(3)
    assert [f.name for f in lists] == [
        f"worst-{n:03d}_{Path(queries.query_paths[i]).stem}.png" for n, i in enumerate(worst, 1)
    ]
    assert np.all(np.diff(queries.ap[worst]) >= 0)
    for file, index in zip(lists, worst, strict=True):
        with Image.open(file) as image:
            image = image.convert("RGB")
            colours = [frame_color(image, cell) for cell in range(1, 5)]
        expected = [MATCH_COLOR if m else MISMATCH_COLOR for m in queries.matches[index, :4]]
        assert colours == expected
