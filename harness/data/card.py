"""The data card: what preparation did to each training set, as numbers.

Written as `card.json` (and `card.txt`, the terminal summary) into the preparation's cache
folder and into sweeps/<sweep>/data/; the report's data-card section reads it back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

CARD_JSON, CARD_TEXT = "card.json", "card.txt"


@dataclass(frozen=True)
class SetCard:
    """One prepared training set (SFT `train` or `preference_train`)."""

    name: str
    source: str
    format: str
    rows_in: int
    rows_out: int
    steps: list[dict] = field(default_factory=list)        # {filter, before, after}
    pii: dict[str, int] = field(default_factory=dict)      # kind -> replacements
    exact_duplicates: int = 0
    near_duplicates: int = 0
    duplicate_examples: list[dict] = field(default_factory=list)   # {kind, row, of, text}
    splits: dict[str, int] = field(default_factory=dict)   # split -> rows
    length_unit: str = "words"
    lengths: dict[str, list[int]] = field(default_factory=dict)    # split -> row lengths
    files: dict[str, str] = field(default_factory=dict)    # split -> prepared file
    duplicates_dropped: bool = True                        # false: counted, rows kept


@dataclass(frozen=True)
class DataCard:
    digest: str
    decontaminate: str
    ngram: int
    min_overlap: float
    sets: list[SetCard]
    contamination: list[dict] = field(default_factory=list)   # contamination.Finding as dicts
    dropped_contaminated: int = 0

    @property
    def contaminated(self) -> int:
        return sum(int(f["flagged"]) for f in self.contamination)


def write_card(card: DataCard, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CARD_JSON).write_text(json.dumps(asdict(card), indent=1))
    (folder / CARD_TEXT).write_text(card_text(card) + "\n")


def read_card(folder: Path) -> DataCard | None:
    """The card in `folder`, or None when there is none."""
    path = Path(folder) / CARD_JSON
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    return DataCard(**{**raw, "sets": [SetCard(**s) for s in raw["sets"]]})


def card_text(card: DataCard) -> str:
    """The card's numbers as terminal lines."""
    lines = [f"data card {card.digest}"]
    for s in card.sets:
        lines.append(f"{s.name}: {s.source} ({s.format}) {s.rows_in} rows in, {s.rows_out} out")
        for step in s.steps:
            lines.append(f"  {step['filter']:<16} {step['before']:>7} -> {step['after']}")
        kept = "" if s.duplicates_dropped else " (kept: data.prepare.filters.dedup.drop=false)"
        lines.append(f"  duplicates: {s.exact_duplicates} exact, {s.near_duplicates} near{kept}")
        lines.append("  pii replaced: " + (", ".join(f"{k} {v}" for k, v in s.pii.items())
                                          or "off"))
        lines.append("  splits: " + ", ".join(f"{k} {v}" for k, v in s.splits.items()))
    lines.append(f"contamination ({card.ngram}-grams, >= {card.min_overlap:.0%} of an example "
                 f"in one training row; decontaminate={card.decontaminate}):")
    for f in card.contamination:
        lines.append(f"  {f['name']:<28} {f['flagged']:>4} flagged of {f['examples']}"
                     f" ({f['too_short']} shorter than {card.ngram} words)")
    if card.dropped_contaminated:
        lines.append(f"  dropped {card.dropped_contaminated} contaminated training rows")
    return "\n".join(lines)
