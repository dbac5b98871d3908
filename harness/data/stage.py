"""One training set through the preparation stage: read -> convert -> PII scrub -> filters ->
exact and near dedup -> split. Bad rows raise DataError naming file and line."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from harness.data.dedup import exact_duplicates, near_duplicates
from harness.data.filters import preference_drop, scrub, text_filters
from harness.data.formats import PREFERENCE, RowError, convert, detect, kind_of
from harness.data.sources import raw_rows
from harness.errors import DataError
from harness.registry import DATA_FORMATS

TEXT_KEYS = {"sft": ("messages",), "preference": ("prompt", "chosen", "rejected")}


@dataclass
class SetResult:
    """A prepared set: rows per split and what each step did."""

    name: str
    kind: str
    source: str
    format: str
    rows_in: int
    splits: dict[str, list[dict]] = field(default_factory=dict)
    where: dict[str, list[str]] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    pii: dict[str, int] = field(default_factory=dict)
    exact: int = 0
    near: int = 0
    examples: list[dict] = field(default_factory=list)
    drop_duplicates: bool = True


def row_text(row: dict) -> str:
    """The text of a training row: every turn's content, joined by newlines."""
    keys = TEXT_KEYS["sft"] if "messages" in row else TEXT_KEYS["preference"]
    return "\n".join(t["content"] for k in keys for t in row[k])


def read_set(spec: DictConfig, kind: str, key: str) -> tuple[str, list[tuple[str, dict]]]:
    """(format, [(where, training row)]) of a spec; DataError `where: problem` on a bad row."""
    named = spec.get("format")
    if named and DATA_FORMATS.check(named) is None and kind_of(str(named)) != kind:
        raise DataError(f"{key}.format: {named!r} is a {kind_of(str(named))} format; this "
                        f"set needs a {kind} one")
    rows = raw_rows(spec)
    overrides = OmegaConf.to_container(spec.fields) if spec.get("fields") else {}
    if spec.get("messages_field"):
        overrides = {"messages": str(spec.messages_field), **overrides}
    name = spec.get("format")
    if not name and spec.get("prompt_field"):     # the older prompt_field/completion_field keys
        name = "prompt_completion"
        overrides = {"prompt": str(spec.prompt_field),
                     "completion": str(spec.get("completion_field") or "completion"), **overrides}
    name = str(name) if name else detect(rows[0][0], rows[0][1], kind, overrides, key)
    problem = DATA_FORMATS.check(name)
    if problem:
        raise DataError(f"{key}.format: {problem}")
    out = []
    for where, row in rows:
        try:
            out.append((where, convert(name, row, overrides)))
        except RowError as exc:
            raise DataError(f"{where}: {exc} (format {name})") from None
    return name, out


def _turns(row: dict) -> list[dict]:
    return [t for k in ("messages", "prompt", "chosen", "rejected") for t in row.get(k, [])]


def prepare_set(name: str, spec: DictConfig, kind: str, key: str, cfg: DictConfig,
                count_tokens: Callable[[str], int] | None) -> SetResult:
    """Read, convert, scrub, filter and deduplicate one training set (no split yet)."""
    fmt, rows = read_set(spec, kind, key)
    res = SetResult(name, kind, str(spec.path), fmt, len(rows))
    pii = cfg.filters.pii
    if pii.enabled:
        counts: Counter = Counter({k: 0 for k in pii.kinds})
        for _, row in rows:
            for turn in _turns(row):
                turn["content"] = scrub(turn["content"], list(pii.kinds), counts)
        res.pii = dict(counts)
    if kind != PREFERENCE or not cfg.filters.preference.empty_turns:
        for where, row in rows:
            for turn in _turns(row):
                if not turn["content"].strip():
                    raise DataError(f"{where}: row is empty after filtering (a {turn['role']} "
                                    "turn has no text)")
    for filter_name, check in text_filters(cfg.filters, count_tokens):
        rows = _step(res, filter_name, rows, lambda r, c=check: c(row_text(r)))
    if kind == PREFERENCE:
        pref = cfg.filters.preference
        for reason in ("empty_turns", "ties", "margin"):
            rows = _step(res, reason, rows, lambda r, why=reason: preference_drop(
                r, pref, lambda turns: "\n".join(t["content"] for t in turns)) == why)
    dedup = cfg.filters.dedup
    res.drop_duplicates = bool(dedup.drop)
    exact: set[int] = set()     # exact duplicates kept (dedup.drop=false): not "near" too
    if dedup.exact:
        rows, res.exact, exact = _dedup(res, "exact", rows, exact_duplicates, set())
    if dedup.near.enabled:
        near = dedup.near
        rows, res.near, _ = _dedup(res, "near", rows, lambda texts: near_duplicates(
            texts, float(near.threshold), int(near.num_perm), int(near.shingle)), exact)
    res.splits, res.where = {"train": [r for _, r in rows]}, {"train": [w for w, _ in rows]}
    return res


def _step(res: SetResult, name: str, rows: list, drop: Callable[[dict], object]) -> list:
    kept = [(w, r) for w, r in rows if not drop(r)]
    res.steps.append({"filter": name, "before": len(rows), "after": len(kept)})
    return kept


def _dedup(res: SetResult, kind: str, rows: list, find: Callable, skip: set[int]) \
        -> tuple[list, int, set[int]]:
    """Rows without the duplicates `find` names (all rows when dedup.drop is false), the count,
    and the duplicates' indices; rows in `skip` are not searched."""
    searched = [i for i in range(len(rows)) if i not in skip]
    found = find([row_text(rows[i][1]) for i in searched])
    dups = {searched[i]: searched[j] for i, j in found.items()}
    for i, j in list(dups.items())[:5]:
        res.examples.append({"kind": kind, "row": rows[i][0], "of": rows[j][0],
                             "text": row_text(rows[i][1])[:200]})
    drop = res.drop_duplicates
    kept = [item for i, item in enumerate(rows) if not drop or i not in dups]
    res.steps.append({"filter": f"{kind}_dedup", "before": len(rows), "after": len(kept)})
    return kept, len(dups), set(dups) if not drop else set()


def split(res: SetResult, fractions: dict[str, float], seed: int) -> None:
    """Seeded split of the train rows into train / validation / test by `fractions`."""
    rows, where = res.splits["train"], res.where["train"]
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    sizes = {k: round(len(rows) * float(v)) for k, v in fractions.items() if k != "train"}
    start = 0
    for name, size in sizes.items():
        if float(fractions[name]) > 0 and size == 0:
            raise DataError(f"{res.source}: split '{name}' is empty ({len(rows)} rows x "
                            f"{fractions[name]})")
        chosen = sorted(order[start:start + size])
        res.splits[name] = [rows[i] for i in chosen]
        res.where[name] = [where[i] for i in chosen]
        start += size
    rest = sorted(order[start:])
    res.splits["train"], res.where["train"] = [rows[i] for i in rest], [where[i] for i in rest]
    res.splits = {k: v for k, v in res.splits.items() if v or float(fractions.get(k, 1)) > 0}


def require_rows(res: SetResult) -> None:
    """Every split of the set has rows (DataError naming the split otherwise)."""
    for name, rows in res.splits.items():
        if not rows:
            raise DataError(f"{res.source}: split '{name}' of {res.name} is empty after "
                            "preparation")
