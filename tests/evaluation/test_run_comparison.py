"""adasp compare: per-query AP differences, bootstrap intervals, the text summary and the page."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from adasp.cli import main
from adasp.errors import UserInputError
from adasp.evaluation.query_results import query_results_path
from adasp.evaluation.run_comparison import compare_query_results, paired_bootstrap
from tests.conftest import load_benchmark

bench = load_benchmark("results_page")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same synthetic test set evaluated with noisier (A) and cleaner (B) features."""
    folder = tmp_path_factory.mktemp("data")
    a, _ = bench.synthetic_query_results(folder, 80, 300, 25, seed=3, noise=1.6)
    b, _ = bench.synthetic_query_results(folder, 80, 300, 25, seed=3, noise=1.0, images=False)
    return a, b


def test_counts_and_intervals(two_runs):
    a, b = two_runs
    c = compare_query_results(a, b, resamples=500)
    valid = a.valid & b.valid
    delta = b.ap[valid] - a.ap[valid]
    assert c.improved + c.worsened + c.same == int(valid.sum())
    assert c.improved == int((delta > 1e-3).sum()) and c.worsened == int((delta < -1e-3).sum())
    # ΔmAP is the difference of the runs' mAPs (the same valid queries in both).
    assert c.delta_map.mean == pytest.approx(b.mean_ap - a.mean_ap, abs=1e-12)
    assert c.delta_rank1.mean == pytest.approx(b.rank1 - a.rank1, abs=1e-12)
    assert c.delta_map.low < c.delta_map.mean < c.delta_map.high and c.delta_map.resamples == 500
    assert c.delta_map.low > 0  # the cleaner features are clearly better
    top = c.largest_changes(3)
    assert np.all(np.abs(c.delta_ap[top]) >= np.nanmax(np.abs(np.delete(c.delta_ap, top))))


def test_a_run_against_itself_changes_nothing(two_runs):
    a, _ = two_runs
    c = compare_query_results(a, a, resamples=50)
    assert (c.improved, c.worsened) == (0, 0) and c.delta_map.low == c.delta_map.high == 0


def test_bootstrap_interval_covers_the_mean_and_narrows_with_queries():
    rng = np.random.default_rng(0)
    small = paired_bootstrap(rng.normal(0.02, 0.1, 100), 2000)
    large = paired_bootstrap(rng.normal(0.02, 0.1, 10_000), 2000)
    assert small.low < 0.02 < small.high
    assert (large.high - large.low) < (small.high - small.low) / 5
    with pytest.raises(UserInputError, match="at least one query"):
        paired_bootstrap(np.zeros(0))


def test_different_test_sets_are_refused(two_runs):
    a, b = two_runs
    shorter = dataclasses.replace(b, query_paths=b.query_paths[:-1])
    with pytest.raises(UserInputError, match="queries differ"):
        compare_query_results(a, shorter)


def test_compare_command_text_and_page(two_runs, tmp_path, capsys):
    a, b = two_runs
    for name, run in (("a", a), ("b", b)):
        run.save(query_results_path(tmp_path / name, run.test_set))
    page = tmp_path / "pages" / "compare.html"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--html", str(page),
                 "--resamples", "200", "--top", "4"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "improved" in out and "worsened" in out and "200 resamples" in out
    assert re.search(r"mAP\s+\S+\s+\S+\s+\+\d+\.\d\d \[\+\d+\.\d\d, \+\d+\.\d\d\]", out)
    assert "largest changes (top 4)" in out
    text = page.read_text()
    data = json.loads(re.search(r'type="application/json">(.*?)</script>', text, re.S).group(1))
    assert data["runs"] == ["A", "B"] and len(data["test_sets"][0]["runs"]) == 2
    assert "200 resamples" in text


def test_compare_errors_are_one_line(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "x"), str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "adasp evaluate --checkpoint MODEL --output" in err


@pytest.mark.slow
def test_comparison_page_in_chromium(two_runs, tmp_path):
    if bench.find_browser() is None:
        pytest.skip(
            "no chromium + chromedriver installed (apt-get install chromium chromium-driver)"
        )
    pytest.importorskip("selenium", reason="the browser tests drive Chromium with selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from adasp.evaluation.results_page import write_comparison_page

    a, b = two_runs
    c = compare_query_results(a, b, resamples=100)
    page = write_comparison_page(tmp_path / "compare.html", [c], topk=4)
    browser = bench.open_browser()
    try:
        browser.get(page.as_uri())
        rows = browser.find_elements(By.CSS_SELECTOR, "#rows tr.query-row")
        assert len(rows) == a.num_queries
        first = rows[0]
        assert len(first.find_elements(By.CSS_SELECTOR, ".list")) == 2  # A and B side by side
        assert int(first.get_attribute("data-query")) == int(c.largest_changes(1)[0])
        Select(browser.find_element(By.ID, "sort")).select_by_value("delta-asc")
        ap_pairs = [
            [float(v) for v in r.get_attribute("data-ap").split()]
            for r in browser.find_elements(By.CSS_SELECTOR, "#rows tr.query-row")
        ]
        deltas = [pb - pa for pa, pb in ap_pairs]
        assert deltas == sorted(deltas)
    finally:
        browser.quit()
