"""`python -m harness action=human_eval`: a blinded, shuffled side-by-side rating sheet of
generations, and the import of the filled sheets (the guides' human-eval pattern).

    export_sheet(data, settings, out_dir)  -> {"csv", "html", "key"}: one row per (prompt,
        blinded system); systems are shown as A, B, C... in an order shuffled per prompt
        (seeded), prompts shuffled too; the key (label -> system) stays in the sweep folder
    import_ratings(sweep_dir, paths)       -> the copied CSVs under sweeps/<sweep>/human_eval/
    human_eval(overrides)                  the action: export, or import when
                                           `human_eval.ratings` is set, then rebuild the report

Raters fill `relevance`, `coherence` and `correctness` (1-5) and their name in `rater`, in the
CSV or in the HTML form (self-contained: it saves a CSV of the same columns). The report's
"Human evaluation" section turns the ratings into per-system means with CIs and
Krippendorff's alpha (harness.report.sections.human).
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.config.compose import compose_config, resolve_paths
from harness.errors import ConfigError
from harness.layout import HUMAN_KEY_FILE, HUMAN_RATINGS_DIR, human_eval_dir, sweep_dir
from harness.records import TrialRecord
from harness.report.html import document, e
from harness.report.page import write_report
from harness.sweep.results import SweepData, load_sweep

CRITERIA = ("relevance", "coherence", "correctness")
SCALE = (1, 2, 3, 4, 5)
COLUMNS = ("item", "prompt", "system", "response", *CRITERIA, "rater")
BASE = "base"


@dataclass(frozen=True)
class SheetSettings:
    """The `human_eval:` block of conf/config.yaml."""

    trials: tuple[int, ...] | None = None
    include_base: bool = True
    max_prompts: int = 20
    seed: int = 0

    @classmethod
    def from_config(cls, node) -> SheetSettings:
        node = node or {}
        trials = node.get("trials")
        return cls(tuple(int(t) for t in trials) if trials else None,
                   bool(node.get("include_base", True)), int(node.get("max_prompts", 20)),
                   int(node.get("seed", 0)))


def systems(data: SweepData, settings: SheetSettings) -> dict[str, TrialRecord]:
    """System id ("base", "trial-0003") -> record: the chosen trials (default: each method's
    best), plus the base model."""
    by_number = {r.number: r for r in data.ranked}
    if settings.trials:
        unknown = [t for t in settings.trials if t not in by_number]
        if unknown:
            raise ConfigError(f"human_eval.trials: no COMPLETE trial {unknown} in {data.name}")
        chosen = [by_number[t] for t in settings.trials]
    else:
        chosen = []
        for record in data.ranked:
            if record.method not in {c.method for c in chosen}:
                chosen.append(record)
    out = {BASE: data.baseline} if settings.include_base and data.baseline else {}
    out.update({f"trial-{r.number:04d}": r for r in chosen})
    if len(out) < 2:
        raise ConfigError("human_eval: needs two systems with sample generations (set "
                          "human_eval.trials or keep human_eval.include_base)")
    return out


def _generations(record: TrialRecord) -> dict[str, str]:
    return {str(s.get("prompt")): str(s.get("generation") or "") for s in record.samples or []
            if isinstance(s, dict) and s.get("prompt")}


def sheet_rows(data: SweepData, settings: SheetSettings) -> tuple[list[dict], dict]:
    """The blinded rows and the key {item: {label: system}}; prompts every system answered."""
    chosen = systems(data, settings)
    gens = {sid: _generations(r) for sid, r in chosen.items()}
    prompts = [p for p in next(iter(gens.values())) if all(p in g for g in gens.values())]
    if not prompts:
        raise ConfigError("human_eval: the chosen systems share no sample prompt "
                          "(eval.samples_in_record)")
    rng = random.Random(settings.seed)
    rng.shuffle(prompts)
    rows, key = [], {}
    for i, prompt in enumerate(prompts[: settings.max_prompts]):
        order = list(gens)
        rng.shuffle(order)
        item = f"q{i + 1:03d}"
        key[item] = {}
        for j, sid in enumerate(order):
            label = chr(ord("A") + j)
            key[item][label] = sid
            rows.append({"item": item, "prompt": prompt, "system": label,
                         "response": gens[sid][prompt], **dict.fromkeys(CRITERIA, ""),
                         "rater": ""})
    return rows, key


def export_sheet(data: SweepData, settings: SheetSettings, out_dir: Path) -> dict[str, Path]:
    """Write sheet.csv and form.html under out_dir, key.json under the sweep folder."""
    rows, key = sheet_rows(data, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "sheet.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    html_path = out_dir / "form.html"
    html_path.write_text(form_html(data.name, rows), encoding="utf-8")
    folder = human_eval_dir(data.sweep_dir)
    folder.mkdir(parents=True, exist_ok=True)
    key_path = folder / HUMAN_KEY_FILE
    key_path.write_text(json.dumps({"sweep": data.name, "seed": settings.seed,
                                    "criteria": list(CRITERIA), "items": key}, indent=1))
    return {"csv": csv_path, "html": html_path, "key": key_path}


FORM_SCRIPT = """
function csvCell(v) {
  v = String(v);
  return /[",\\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
}
document.getElementById('save').addEventListener('click', function () {
  var rater = document.getElementById('rater').value.trim() || 'anonymous';
  var lines = [COLUMNS.join(',')];
  document.querySelectorAll('tr.item').forEach(function (tr) {
    var cells = [tr.dataset.item, tr.querySelector('.prompt').textContent, tr.dataset.system,
                 tr.querySelector('.response').textContent];
    CRITERIA.forEach(function (c) {
      var picked = tr.querySelector('input[name="' + tr.id + '-' + c + '"]:checked');
      cells.push(picked ? picked.value : '');
    });
    cells.push(rater);
    lines.push(cells.map(csvCell).join(','));
  });
  var blob = new Blob([lines.join('\\n') + '\\n'], {type: 'text/csv'});
  var a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = 'ratings-' + rater.replace(/[^A-Za-z0-9_-]+/g, '_') + '.csv';
  a.click();
});
"""


def form_html(name: str, rows: list[dict]) -> str:
    """A self-contained rating form (model text escaped: inert); saves a CSV of the ratings."""
    body = [f"<h1>Rate the answers ({e(name)})</h1>",
            "<p>Each prompt has answers from several systems, shown as A, B, C in a random "
            "order. Rate every answer 1 (poor) to 5 (excellent) on each criterion, then press "
            "<b>Save ratings</b> and send the CSV back.</p>",
            '<p>Your name: <input id="rater" type="text"></p><table><thead><tr><th>item</th>'
            "<th>prompt</th><th>system</th><th>answer</th>"
            + "".join(f"<th>{c}</th>" for c in CRITERIA) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        rid = f"r{i}"
        radios = "".join(
            "<td>" + " ".join(f'<label><input type="radio" name="{rid}-{c}" value="{v}">{v}'
                              "</label>" for v in SCALE) + "</td>" for c in CRITERIA)
        body.append(f'<tr class="item" id="{rid}" data-item="{e(row["item"])}" '
                    f'data-system="{e(row["system"])}"><td>{e(row["item"])}</td>'
                    f'<td><div class="text prompt">{e(row["prompt"])}</div></td>'
                    f"<td>{e(row['system'])}</td>"
                    f'<td><div class="text response">{e(row["response"])}</div></td>{radios}</tr>')
    body.append('</tbody></table><p><button id="save" type="button">Save ratings</button></p>')
    script = (f"var COLUMNS = {json.dumps(list(COLUMNS))}; var CRITERIA = "
              f"{json.dumps(list(CRITERIA))};" + FORM_SCRIPT)
    return document(f"Human evaluation: {name}", "".join(body)).replace(
        "</body>", f"<script>{script}</script></body>")


def import_ratings(sweep: Path, paths: list[str]) -> list[Path]:
    """Copy filled sheets into sweeps/<sweep>/human_eval/ratings/ (after checking columns)."""
    folder = human_eval_dir(sweep)
    if not (folder / HUMAN_KEY_FILE).is_file():
        raise ConfigError(f"human_eval.ratings: no sheet was exported for {sweep} "
                          "(run action=human_eval without ratings first)")
    out = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_file():
            raise ConfigError(f"human_eval.ratings: no file {path}")
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        missing = [c for c in ("item", "system", *CRITERIA, "rater") if c not in header]
        if missing:
            raise ConfigError(f"human_eval.ratings: {path} lacks column(s) {missing}")
        target = folder / HUMAN_RATINGS_DIR / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        out.append(target)
    return out


def human_eval(overrides: list[str]) -> int:
    """The action: export a sheet, or (human_eval.ratings set) import filled ones; then the
    report is rebuilt so it shows the ratings."""
    cfg = resolve_paths(compose_config(overrides))
    sweep = sweep_dir(cfg)
    if not (sweep / "sweep.yaml").is_file():
        raise ConfigError(f"sweep.name: no sweep at {sweep}")
    block = cfg.get("human_eval") or {}
    ratings = block.get("ratings")
    reports = Path(str(cfg.paths.reports))
    if ratings:
        paths = [str(ratings)] if isinstance(ratings, str) else [str(p) for p in ratings]
        for path in import_ratings(sweep, paths):
            print(f"imported: {path}")
    else:
        files = export_sheet(load_sweep(sweep), SheetSettings.from_config(block),
                             reports / str(cfg.sweep.name) / "human_eval")
        print("human-eval sheet: " + ", ".join(f"{k} {v}" for k, v in files.items()))
    page = write_report(sweep, reports / f"{cfg.sweep.name}.html", None, cfg.get("report"))
    print(f"report: {page}")
    return 0
