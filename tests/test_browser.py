"""The reports in a real browser: headless Chromium (Debian's `chromium`) driven by playwright.

The sweep and comparison reports are built from synthetic records (tests/test_report.py), with
replicates and lm-eval / MT-Bench metrics so that every figure kind is on the page, and with
model output that tries to run script. Checks: no JavaScript error, every plotly figure drawn,
no request leaves the file (self-contained), the hostile generation shows as text and runs
nothing, the headline fits the first screen; a full-page screenshot is saved under
test-artifacts/browser/.

Skipped when chromium or playwright is missing, except under CI=true, where that fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.records import FAILED, PRUNED, TrialError, read_record, write_record
from harness.report.compare import write_compare
from harness.report.page import write_report
from harness.sweep.results import load_sweep
from tests.conftest import REPO
from tests.test_report import make_replicates, make_sweep

XSS_SCRIPT = "<script>window.__xss=1</script>"
XSS_IMG = '<img src=x onerror="window.__xss=2">'
GENERATION = f"The answer is 4. {XSS_SCRIPT} and {XSS_IMG} end."
ARTIFACTS = REPO / "test-artifacts" / "browser"
VIEWPORT = {"width": 1366, "height": 900}


def _chromium() -> str:
    """Chromium's path; skip (locally) or fail (CI=true) when it or playwright is missing."""
    missing = []
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing.append("chromium (Debian package: apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    path = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, headless=True,
                                      args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """A sweep report (every section filled) and a comparison report, from synthetic records."""
    root = tmp_path_factory.mktemp("browser")
    sweep = make_sweep(root, 10, statuses={3: FAILED, 6: PRUNED}, evals=True,
                       storage="journal", name="browser")
    data = load_sweep(sweep)
    best = data.best
    record = read_record(sweep / "trials" / f"{best.number:04d}")
    record.samples = [{**s, "generation": GENERATION} for s in record.samples]
    write_record(record, sweep / "trials" / f"{best.number:04d}")
    failed = read_record(sweep / "trials" / "0003")
    failed.error = TrialError("RuntimeError", f"bad output {XSS_IMG}", failed.error.log)
    write_record(failed, sweep / "trials" / "0003")
    make_replicates(sweep, {best.number: 0.02, data.ranked[1].number: 0.02,
                            data.ranked[-1].number: 0.01}, generation=GENERATION)
    other = make_sweep(root, 6, storage="journal", name="other", seed=3, evals=True)
    return {"sweep": write_report(sweep, root / "reports" / "browser.html"),
            "compare": write_compare([sweep, other], root / "reports" / "compare.html")}


def _open(browser, path: Path) -> tuple[object, list[str], list[str]]:
    """Load a report from file://; returns (page, JavaScript errors, outside requests)."""
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}")
            if msg.type == "error" else None)

    def route(request_route) -> None:
        url = request_route.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")):
            request_route.continue_()
        else:
            outside.append(url)
            request_route.abort()

    page.route("**/*", route)
    page.goto(path.as_uri(), wait_until="load")
    return page, errors, outside


DRAWN_JS = ("d => d.classList.contains('js-plotly-plot') && d.querySelector('svg.main-svg')"
            " && d.querySelectorAll('svg.main-svg g.trace').length > 0")


def _figures_drawn(page) -> tuple[int, int]:
    """(plotly figures on the page, figures drawn: an svg.main-svg with at least one trace),
    after waiting up to a minute for plotly to draw them all."""
    every = f"Array.from(document.querySelectorAll('.plotly-graph-div')).every({DRAWN_JS})"
    page.wait_for_function(f"() => {every}", timeout=60_000)
    return page.evaluate(
        "() => { const all = Array.from(document.querySelectorAll('.plotly-graph-div'));"
        f" return [all.length, all.filter({DRAWN_JS}).length]; }}")


def _screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_sweep_report_renders_without_errors(browser, reports) -> None:
    page, errors, outside = _open(browser, reports["sweep"])
    total, drawn = _figures_drawn(page)
    shot = _screenshot(page, "sweep-report")
    assert errors == []
    assert outside == []
    assert total >= 12 and drawn == total     # issue 16: grids only for the objectives
    assert shot.stat().st_size > 10_000
    page.close()


def test_hostile_generation_is_text_and_runs_nothing(browser, reports) -> None:
    page, errors, _ = _open(browser, reports["sweep"])
    _figures_drawn(page)
    assert page.evaluate("typeof window.__xss") == "undefined"
    samples = page.inner_text("#samples")
    assert XSS_SCRIPT in samples and XSS_IMG in samples
    assert XSS_IMG in page.inner_text("#failures")
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    scripts = page.evaluate("Array.from(document.scripts).map(s => s.textContent)")
    assert not any("__xss" in s for s in scripts)
    assert errors == []
    page.close()


def test_headline_is_on_the_first_screen(browser, reports) -> None:
    page, _, _ = _open(browser, reports["sweep"])
    box = page.locator(".headline").bounding_box()
    assert box is not None and box["y"] + box["height"] <= VIEWPORT["height"]
    text = page.inner_text(".headline")
    assert "Best trial #" in text and "vs base model" in text
    assert "peak RSS" in text and "train" in text and "wall" in text and "GPU-h" in text
    assert "seeds" in text
    page.close()


def test_compare_report_renders_without_errors(browser, reports) -> None:
    page, errors, outside = _open(browser, reports["compare"])
    total, drawn = _figures_drawn(page)
    _screenshot(page, "compare-report")
    assert errors == [] and outside == []
    assert total >= 2 and drawn == total
    assert "Best: sweep" in page.inner_text(".headline")
    page.close()


def test_sorting_a_table_raises_no_error(browser, reports) -> None:
    page, errors, _ = _open(browser, reports["sweep"])
    header = page.locator("table.sortable th").nth(0)
    header.click()
    header.click()
    numbers = page.evaluate("Array.from(document.querySelectorAll('table.sortable tbody tr'))"
                            ".map(r => Number(r.cells[0].textContent))")
    assert numbers == sorted(numbers, reverse=True)
    assert errors == []
    page.close()


LONG_GENERATION = "x" * 10_000   # one 10,000-character line, no space to break at


def test_long_generation_stays_within_the_viewport(browser, tmp_path) -> None:
    # a 10,000-character line once made a 43,232 px cell (an 86,700 px page in 1,400 px)
    sweep = make_sweep(tmp_path, 3, name="long")
    number = load_sweep(sweep).best.number
    record = read_record(sweep / "trials" / f"{number:04d}")
    record.samples = [{**s, "generation": LONG_GENERATION} for s in record.samples]
    write_record(record, sweep / "trials" / f"{number:04d}")
    page, errors, _ = _open(browser, write_report(sweep, tmp_path / "long.html"))
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= VIEWPORT["width"], f"page is {width} px wide in a {VIEWPORT['width']} window"
    assert LONG_GENERATION in page.inner_text("#samples")   # all of it is there, scrollable
    assert errors == []
    page.close()


LR = "method.train.learning_rate"


def test_decision_and_warnings_are_on_the_first_screen(browser, tmp_path) -> None:
    """Issue 16: the decision summary and its search-space warnings (here: the best learning
    rate at the top of its range) sit above the fold; model text in them stays inert."""
    sweep = make_sweep(tmp_path, 8, name="edge", storage="journal", evals=True)
    data = load_sweep(sweep)
    best = data.ranked[0].number
    record = read_record(sweep / "trials" / f"{best:04d}")
    record.params[LR] = 1.95e-3                  # range 3e-4 .. 2e-3 (log): the high edge
    record.samples = [{**s, "generation": GENERATION} for s in record.samples]
    write_record(record, sweep / "trials" / f"{best:04d}")
    make_replicates(sweep, {best: 0.02, data.ranked[1].number: 0.02})
    page, errors, _ = _open(browser, write_report(sweep, tmp_path / "edge.html"))
    _figures_drawn(page)
    _screenshot(page, "decision-first-screen")
    for selector in ("#decision table", ".warnings"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["y"] + box["height"] <= VIEWPORT["height"], selector
    assert "Decision:" in page.inner_text("#decision")
    warning = page.inner_text(".warnings")
    assert LR in warning and "high end" in warning and f"sweep.params.{LR}.high=" in warning
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert errors == []
    page.close()


def test_human_eval_form_saves_a_sheet_the_import_reads(browser, tmp_path) -> None:
    """Issue 16: the rating form is self-contained, shows model text inertly, and its Save
    button downloads a CSV with the sheet's columns that action=human_eval imports."""
    import csv

    from harness.report.human_eval import COLUMNS, SheetSettings, export_sheet, import_ratings
    from harness.report.sections.human import extract_human

    sweep = make_sweep(tmp_path, 8, name="rate", storage="journal")
    best = load_sweep(sweep).best.number
    record = read_record(sweep / "trials" / f"{best:04d}")
    record.samples = [{**s, "generation": GENERATION} for s in record.samples]
    write_record(record, sweep / "trials" / f"{best:04d}")
    files = export_sheet(load_sweep(sweep), SheetSettings(max_prompts=2), tmp_path / "sheet")
    page, errors, outside = _open(browser, files["html"])
    assert page.evaluate("typeof window.__xss") == "undefined" and XSS_SCRIPT in page.inner_text(
        "body")
    page.fill("#rater", "dana")
    for radio in page.locator('input[type="radio"][value="4"]').all():
        radio.check()
    with page.expect_download() as download:
        page.click("#save")
    saved = tmp_path / "dana.csv"
    download.value.save_as(saved)
    with saved.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with files["csv"].open(newline="", encoding="utf-8") as handle:
        sheet = list(csv.DictReader(handle))
    assert list(rows[0]) == list(COLUMNS) and len(rows) == len(sheet)
    assert [r["response"] for r in rows] == [r["response"] for r in sheet]   # text survives
    assert {r["relevance"] for r in rows} == {"4"} and {r["rater"] for r in rows} == {"dana"}
    import_ratings(sweep, [str(saved)])
    info = extract_human(load_sweep(sweep))
    assert info.raters == ("dana",) and {r.mean for r in info.ratings} == {4.0}
    assert errors == [] and outside == []
    page.close()
