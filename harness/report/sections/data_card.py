"""The data card: rows through each filter, duplicates, PII, splits, length histograms per
split and contamination findings (from sweeps/<sweep>/data/card.json).

    extract_data_card(data) -> DataCardInfo     render_data_card(info, figs)
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

from harness.report.figures import Figures, color
from harness.report.html import e, note, table, text
from harness.sweep.results import SweepData


@dataclass(frozen=True)
class SetInfo:
    name: str
    source: str
    format: str
    rows_in: int
    rows_out: int
    steps: tuple[tuple[str, int, int], ...]          # (filter, before, after)
    pii: tuple[tuple[str, int], ...]
    exact: int
    near: int
    dropped_duplicates: bool
    duplicate_examples: tuple[tuple[str, str, str, str], ...]   # (kind, row, of, text)
    splits: tuple[tuple[str, int], ...]
    unit: str
    lengths: tuple[tuple[str, tuple[int, ...]], ...]  # (split, lengths)


@dataclass(frozen=True)
class DataCardInfo:
    present: bool
    digest: str = ""
    decontaminate: str = ""
    ngram: int = 13
    min_overlap: float = 0.0
    sets: tuple[SetInfo, ...] = ()
    contamination: tuple[tuple[str, int, int, int], ...] = ()  # (set, examples, short, flagged)
    flagged: tuple[tuple[str, str, str], ...] = ()      # (eval set, text, training rows)
    dropped_contaminated: int = 0


def extract_data_card(data: SweepData) -> DataCardInfo:
    """The card's numbers (present=False when the sweep has no card)."""
    card = data.data_card
    if card is None:
        return DataCardInfo(present=False)
    sets = tuple(SetInfo(
        s.name, s.source, s.format, s.rows_in, s.rows_out,
        tuple((st["filter"], int(st["before"]), int(st["after"])) for st in s.steps),
        tuple(s.pii.items()), s.exact_duplicates, s.near_duplicates, s.duplicates_dropped,
        tuple((x["kind"], x["row"], x["of"], x["text"]) for x in s.duplicate_examples),
        tuple(s.splits.items()), s.length_unit,
        tuple((k, tuple(v)) for k, v in s.lengths.items())) for s in card.sets)
    findings = tuple((f["name"], int(f["examples"]), int(f["too_short"]), int(f["flagged"]))
                     for f in card.contamination)
    flagged = tuple((f["name"], x["text"], ", ".join(x["train_rows"]))
                    for f in card.contamination for x in f["flagged_examples"])
    return DataCardInfo(True, card.digest, card.decontaminate, card.ngram, card.min_overlap,
                        sets, findings, flagged, card.dropped_contaminated)


def render_data_card(info: DataCardInfo, figs: Figures) -> str:
    if not info.present:
        return note("No data card: this sweep ran before the data preparation stage "
                    "(`python -m harness action=prepare` makes one).")
    parts = [note(f"Prepared data {info.digest} (cached by content hash).")]
    for s in info.sets:
        parts.append(f"<h3>{e(s.name)}: {e(s.source)} ({e(s.format)})</h3>")
        parts.append(table(["step", "rows before", "rows after", "dropped"],
                           [[name, b, a, b - a] for name, b, a in s.steps]))
        kept = "" if s.dropped_duplicates else " (found and kept: dedup.drop is false)"
        pii = ", ".join(f"{k}: {v}" for k, v in s.pii) or "off"
        parts.append(note(f"{s.rows_in} rows in, {s.rows_out} training rows out. Duplicates: "
                          f"{s.exact} exact, {s.near} near{kept}. PII replaced: {pii}. "
                          "Splits: " + ", ".join(f"{k} {v}" for k, v in s.splits) + "."))
        if s.duplicate_examples:
            parts.append(table(["kind", "row", "duplicate of", "text"],
                               [[k, r, o, text(t)] for k, r, o, t in s.duplicate_examples]))
        parts.append(figs.html(_histogram(s), height=320))
    parts.append(f"<h3>Contamination ({info.ngram}-gram overlap with the evaluation sets)</h3>")
    parts.append(note(f"An evaluation example is flagged when one training row holds at least "
                      f"{info.min_overlap:.0%} of its {info.ngram}-grams; "
                      f"data.decontaminate={info.decontaminate}"
                      + (f", {info.dropped_contaminated} training rows dropped."
                         if info.dropped_contaminated else ".")))
    parts.append(table(["evaluation set", "examples", f"shorter than {info.ngram} words",
                        "flagged"], [list(row) for row in info.contamination]))
    if info.flagged:
        parts.append(table(["evaluation set", "flagged example", "training rows"],
                           [[name, text(t), rows] for name, t, rows in info.flagged]))
    return "".join(parts)


def _histogram(s: SetInfo) -> go.Figure:
    fig = go.Figure()
    for i, (split, lengths) in enumerate(s.lengths):
        fig.add_trace(go.Histogram(x=list(lengths), name=f"{split} ({len(lengths)})",
                                   marker_color=color(i), opacity=0.7))
    fig.update_layout(barmode="overlay", title=f"{s.name}: length per row ({s.unit})",
                      xaxis_title=s.unit, yaxis_title="rows")
    return fig
