"""action=human_eval round trip: export a blinded, shuffled sheet, fill it as three raters would
(in the test), import it through the command line, and read per-system means and
Krippendorff's alpha from the report's extract function; alpha must equal the `krippendorff`
package's value on the same ratings, the means a hand computation."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import krippendorff
import numpy as np
import pytest

from harness.cli import main
from harness.report.human_eval import COLUMNS, CRITERIA
from harness.report.sections.human import extract_human
from harness.sweep.results import load_sweep
from tests.test_report import XSS_SCRIPT, make_sweep

QUALITY = {"base": 2.0}          # a system's true quality; trials get 4.0


def _fill(rows: list[dict], key: dict, rater: str, noise: int) -> list[dict]:
    rng = random.Random(rater)
    out = []
    for row in rows:
        system = key[row["item"]][row["system"]]
        true = QUALITY.get(system, 4.0)
        filled = {**row, "rater": rater}
        for c in CRITERIA:
            filled[c] = str(int(min(5, max(1, true + rng.randint(-noise, noise)))))
        out.append(filled)
    if rater == "carol":                          # one rater skips an answer
        out[0] = {**out[0], "relevance": ""}
    return out


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    root = tmp_path_factory.mktemp("human")
    sweep = make_sweep(root, 8, storage="journal")
    args = [f"paths.sweeps={root / 'sweeps'}", f"paths.reports={root / 'reports'}",
            "sweep.name=synthetic", "human_eval.max_prompts=3"]
    assert main(["action=human_eval", *args]) == 0
    sheet = root / "reports" / "synthetic" / "human_eval" / "sheet.csv"
    with sheet.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    key = json.loads((sweep / "human_eval" / "key.json").read_text())["items"]
    filled = []
    for rater, noise in (("alice", 0), ("bob", 1), ("carol", 1)):
        path = root / f"ratings-{rater}.csv"
        mine = _fill(rows, key, rater, noise)
        filled += mine
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(mine)
    paths = ",".join(str(root / f"ratings-{r}.csv") for r in ("alice", "bob", "carol"))
    assert main(["action=human_eval", *args, f"human_eval.ratings=[{paths}]"]) == 0
    return root, sweep, rows, key, filled


def test_sheet_is_blinded_and_shuffled(rated) -> None:
    root, sweep, rows, key, _ = rated
    data = load_sweep(sweep)
    assert list(rows[0]) == list(COLUMNS)
    systems = {s for labels in key.values() for s in labels.values()}
    best_per_method = {f"trial-{r.number:04d}" for r in data.ranked
                       if r is next(x for x in data.ranked if x.method == r.method)}
    assert systems == {"base", *best_per_method}
    assert {r["system"] for r in rows} <= {"A", "B", "C"}        # labels, never system ids
    assert not any("trial-" in r["response"] or r["system"] == "base" for r in rows)
    orders = [tuple(key[item][label] for label in sorted(key[item])) for item in key]
    assert len(set(orders)) > 1 or len(key) == 1                  # order shuffled per prompt
    form = (root / "reports" / "synthetic" / "human_eval" / "form.html").read_text()
    assert XSS_SCRIPT not in form and "&lt;script&gt;" in form   # model text stays inert
    assert form.count('type="radio"') == len(rows) * len(CRITERIA) * 5


def test_imported_ratings_alpha_equals_krippendorff(rated) -> None:
    _, sweep, _, key, filled = rated
    info = extract_human(load_sweep(sweep))
    assert info.skip is None and info.raters == ("alice", "bob", "carol")
    units = sorted({(r["item"], r["system"]) for r in filled})
    for criterion, alpha in info.alpha:
        matrix = np.full((3, len(units)), np.nan)
        for r in filled:
            if r[criterion]:
                matrix[("alice", "bob", "carol").index(r["rater"]),
                       units.index((r["item"], r["system"]))] = float(r[criterion])
        expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal")
        assert alpha == pytest.approx(expected, abs=1e-12)
        assert 0.3 < alpha <= 1.0                              # raters mostly agree
    # per-system means: each answer averaged over its raters, then over answers
    for rating in info.ratings:
        per_answer = {}
        for r in filled:
            if key[r["item"]][r["system"]] == rating.system and r[rating.criterion]:
                per_answer.setdefault((r["item"], r["system"]), []).append(
                    float(r[rating.criterion]))
        means = [float(np.mean(v)) for v in per_answer.values()]
        assert rating.mean == pytest.approx(float(np.mean(means)))
        assert rating.n_answers == len(means)
    base = next(r for r in info.ratings if r.system == "base" and r.criterion == "coherence")
    trial = next(r for r in info.ratings if r.system != "base" and r.criterion == "coherence")
    assert base.mean < trial.mean and not base.interval.overlaps(trial.interval)


def test_report_shows_human_section(rated) -> None:
    root, *_ = rated
    page = (root / "reports" / "synthetic.html").read_text(encoding="utf-8")
    start = page.index('<section id="human">')
    human = page[start:page.index("</section>", start)]
    assert "Krippendorff" in human and "trial-" in human and "could not be made" not in human


def test_import_without_a_sheet_is_an_input_error(tmp_path: Path, capsys) -> None:
    make_sweep(tmp_path, 2, storage="journal")
    bad = tmp_path / "r.csv"
    bad.write_text("item,system\n")
    code = main(["action=human_eval", f"paths.sweeps={tmp_path / 'sweeps'}",
                 f"paths.reports={tmp_path / 'reports'}", "sweep.name=synthetic",
                 f"human_eval.ratings=[{bad}]"])
    assert code == 2 and "no sheet was exported" in capsys.readouterr().err
