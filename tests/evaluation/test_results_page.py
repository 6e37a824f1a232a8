"""The results page (adasp evaluate --html): its data, and the page itself in headless Chromium.

The browser tests open the written page from disk, check the DOM against the evaluator (one
row per query, the AP of each row equal to the evaluator's), click a sort and a filter, and
take a screenshot. They skip, saying so, only where no Chromium and chromedriver are installed
(``.ci/run`` installs Debian's ``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from adasp.evaluation import evaluate_ranking
from adasp.evaluation.query_results import QueryResults, load_evaluation_queries
from adasp.evaluation.results import RankingMetrics
from adasp.evaluation.results_page import cmc_curve, write_results_page
from tests.conftest import load_benchmark

bench = load_benchmark("results_page")


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    queries, result = bench.synthetic_query_results(folder, 60, 240, 20, seed=1)
    return folder, queries, result


def page_data(path) -> dict:
    text = path.read_text()
    found = re.search(r'<script id="adasp-data" type="application/json">(.*?)</script>', text, re.S)
    assert found is not None
    return json.loads(found.group(1))


def test_collected_ranks_and_lists_agree_with_the_evaluator(evaluation):
    _, queries, result = evaluation
    np.testing.assert_array_equal(queries.ap, result["ap"])
    # The first-match ranks give the evaluator's CMC exactly.
    np.testing.assert_allclose(cmc_curve(queries, 50), result["cmc"])
    # Ranked lists: nearest first, never a junk (same identity, same camera) item.
    for i in range(queries.num_queries):
        kept = queries.ranked[i][queries.ranked[i] >= 0]
        assert len(kept) == queries.ranked.shape[1]
        assert np.all(np.diff(queries.distances[i]) >= 0)
        assert not np.any(
            (queries.gallery_pids[kept] == queries.query_pids[i])
            & (queries.gallery_camids[kept] == queries.query_camids[i])
        )


def test_per_query_file_round_trip(evaluation, tmp_path):
    _, queries, _ = evaluation
    path = queries.save(tmp_path / "queries" / "market-like.npz")
    loaded = load_evaluation_queries(tmp_path)[0]
    assert loaded.test_set == "market-like" and loaded.camera_filter
    np.testing.assert_array_equal(loaded.ap, queries.ap)
    np.testing.assert_array_equal(loaded.ranked, queries.ranked)
    assert loaded.query_paths.tolist() == queries.query_paths.tolist()
    assert path.stat().st_size < 40_000


def test_missing_per_query_results_name_the_command(tmp_path):
    from adasp.errors import UserInputError

    with pytest.raises(UserInputError, match="adasp evaluate --checkpoint MODEL --output"):
        load_evaluation_queries(tmp_path)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserInputError, match="not a per-query results file"):
        QueryResults.load(tmp_path / "bad.npz")


def test_page_is_self_contained_and_holds_every_query(evaluation, tmp_path):
    _, queries, result = evaluation
    metrics = {"market-like": RankingMetrics.from_result(result)}
    page = write_results_page(tmp_path / "report.html", [queries], metrics, topk=5)
    text = page.read_text()
    # Offline: no external script, style, image or font.
    assert not re.search(r'(src|href)="(https?:)?//', text)
    data = page_data(page)
    (test_set,) = data["test_sets"]
    assert len(test_set["queries"]["name"]) == queries.num_queries
    assert all(len(row) == 5 for row in test_set["runs"][0]["ranked"])
    assert all(t.startswith("data:image/jpeg;base64,") for t in data["thumbs"])
    assert all(i >= 0 for i in test_set["queries"]["thumb"] + test_set["gallery"]["thumb"])
    aps = [math.nan if v is None else v for v in test_set["runs"][0]["ap"]]
    np.testing.assert_array_equal(aps, result["ap"])


def test_unreadable_images_become_grey_boxes(tmp_path):
    queries, _ = bench.synthetic_query_results(tmp_path, 10, 40, 5, images=False)
    page = write_results_page(tmp_path / "report.html", [queries], topk=3)
    data = page_data(page)
    assert data["thumbs"] == [] and "could not be read" in page.read_text()


# ---------------------------------------------------------------------------- in a browser
@pytest.fixture(scope="module")
def browser():
    if bench.find_browser() is None:
        pytest.skip(
            "no chromium + chromedriver installed (apt-get install chromium chromium-driver)"
        )
    pytest.importorskip("selenium", reason="the browser tests drive Chromium with selenium")
    driver = bench.open_browser()
    yield driver
    driver.quit()


def rows(browser) -> list:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, "#rows tr.query-row")


@pytest.mark.slow
def test_page_in_chromium_sort_filter_and_screenshot(evaluation, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, queries, result = evaluation
    metrics = {"market-like": RankingMetrics.from_result(result)}
    page = write_results_page(tmp_path / "report.html", [queries], metrics, topk=5)
    browser.get(page.as_uri())
    assert browser.execute_script("return window.adaspReady") > 0
    shown = rows(browser)
    assert len(shown) == queries.num_queries  # one row per query (60 < one page)
    by_query = {int(r.get_attribute("data-query")): r for r in shown}
    for index, row in by_query.items():
        ap = row.get_attribute("data-ap")
        expected = result["ap"][index]
        assert (ap == "null" and math.isnan(expected)) or float(ap) == expected
        assert len(row.find_elements(By.CSS_SELECTOR, ".hit")) == 5
    # Default order: AP, worst first.
    aps = [float(r.get_attribute("data-ap")) for r in shown]
    assert aps == sorted(aps)
    # Marks agree with identities.
    first = shown[0]
    marks = [
        h.get_attribute("data-match") == "true"
        for h in first.find_elements(By.CSS_SELECTOR, ".hit")
    ]
    index = int(first.get_attribute("data-query"))
    assert marks == queries.matches[index, :5].tolist()

    Select(browser.find_element(By.ID, "sort")).select_by_value("pid")
    pids = [int(r.get_attribute("data-pid")) for r in rows(browser)]
    assert pids == sorted(pids) and len(pids) == queries.num_queries

    camera = int(queries.query_camids[0])
    Select(browser.find_element(By.ID, "filter-cam")).select_by_value(str(camera))
    cams = {int(r.get_attribute("data-cam")) for r in rows(browser)}
    assert cams == {camera}
    assert len(rows(browser)) == int((queries.query_camids == camera).sum())
    Select(browser.find_element(By.ID, "filter-cam")).select_by_value("")

    browser.find_element(By.ID, "filter-pid").send_keys(str(int(queries.query_pids[3])))
    assert {int(r.get_attribute("data-pid")) for r in rows(browser)} == {int(queries.query_pids[3])}
    browser.find_element(By.ID, "filter-pid").clear()
    browser.execute_script(
        "const e = document.getElementById('filter-pid'); e.dispatchEvent(new Event('input'));"
    )
    name = queries.query_paths[7].rsplit("/", 1)[-1]
    browser.find_element(By.ID, "search").send_keys(name)
    assert [int(r.get_attribute("data-query")) for r in rows(browser)] == [7]

    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_pages_of_rows(browser, tmp_path):
    from selenium.webdriver.common.by import By

    queries, _ = bench.synthetic_query_results(tmp_path, 250, 600, 50, images=False)
    page = write_results_page(tmp_path / "report.html", [queries], topk=3)
    browser.get(page.as_uri())
    assert len(rows(browser)) == 100
    assert browser.find_element(By.ID, "page-info").text == "page 1 of 3"
    seen = {r.get_attribute("data-query") for r in rows(browser)}
    browser.find_element(By.ID, "next").click()
    seen |= {r.get_attribute("data-query") for r in rows(browser)}
    browser.find_element(By.ID, "next").click()
    seen |= {r.get_attribute("data-query") for r in rows(browser)}
    assert len(seen) == 250


def test_evaluate_ranking_reference_matches_collector():
    """The collector's first-match rank on ties equals a stable full sort's."""
    import torch

    from adasp.evaluation.query_results import RankedListCollector

    dist = torch.tensor([[0.5, 0.5, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2]])
    q_pids, q_cams = torch.tensor([1, 2]), torch.tensor([0, 0])
    g_pids, g_cams = torch.tensor([3, 1, 2, 3]), torch.tensor([1, 1, 1, 1])
    collector = RankedListCollector(g_pids, g_cams, 3)
    collector.add(dist, q_pids, q_cams)
    out = collector.result()
    assert out["first_match"].tolist() == [3, 3]  # query 1: g3 0.1, g0 0.5, g1 0.5 (match)
    assert out["ranked"].tolist() == [[3, 0, 1], [0, 1, 2]]
    ref = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams)
    assert ref["cmc"][2] == 1.0 and ref["cmc"][1] == 0.0
