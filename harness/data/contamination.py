"""Training rows against every evaluation set the sweep uses: word n-gram overlap.

An evaluation example is flagged when one training row holds at least `min_overlap` of the
example's n-grams (13-grams of lower-cased words by default, as in the GPT-3 paper's
contamination study; the 0.7 fraction follows PaLM's rule, so shared template phrases do not
count as leaks). Examples shorter than n words cannot be checked this way and are counted.

The evaluation texts are read from the paths in the composed config (perplexity texts, ROUGE
references, lm-eval task documents, MT-Bench questions, held-out preference pairs and eval-loss
rows); this module imports no evaluation code.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig

from harness.data.jsonl import jsonl_lines
from harness.data.sources import raw_rows

WORD = re.compile(r"[a-z0-9]+")


def grams(text: str, n: int) -> set[tuple[str, ...]]:
    tokens = WORD.findall(text.lower())
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def flat_text(value) -> str:
    """Every string inside a value (chat turns, lists, nested dicts), joined by newlines."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(flat_text(v) for k, v in value.items() if k not in ("role", "from"))
    if isinstance(value, list):
        return "\n".join(flat_text(v) for v in value)
    return ""


@dataclass
class EvalSet:
    name: str
    source: str
    texts: list[str]


@dataclass
class Finding:
    """One evaluation set's result."""

    name: str
    source: str
    examples: int
    too_short: int
    flagged: int = 0
    flagged_examples: list[dict] = field(default_factory=list)   # {eval_index, text, train}
    train_rows: list[int] = field(default_factory=list)          # training rows that match


def _local(path) -> bool:
    return bool(path) and Path(str(path)).is_file()


def eval_sets(cfg: DictConfig, extra: dict[str, list[str]] | None = None) -> list[EvalSet]:
    """Every evaluation set this config scores on, read from its configured paths."""
    data, ev = cfg.data, cfg.eval
    out: list[EvalSet] = []
    ppl = data.get("perplexity")
    if ev.perplexity.get("enabled", True) and ppl and ppl.get("path"):
        fld = data.perplexity.get("text_field", "text")
        out.append(EvalSet("perplexity", str(data.perplexity.path),
                           [str(r.get(fld, "")) for _, r in raw_rows(data.perplexity)]))
    if ev.rouge.get("enabled", True) and data.get("rouge") and data.rouge.get("path"):
        fld = data.rouge.reference_field
        out.append(EvalSet("rouge_references", str(data.rouge.path),
                           [str(r.get(fld, "")) for _, r in raw_rows(data.rouge)]))
    lm = ev.get("lm_eval") or {}
    if lm.get("enabled") and lm.get("include_path"):
        out += _lm_eval_sets(Path(str(lm.include_path)), [str(t) for t in lm.tasks])
    mt = ev.get("mt_bench") or {}
    if mt.get("enabled") and _local(mt.get("question_path")):
        out.append(EvalSet("mt_bench", str(mt.question_path),
                           [flat_text(r.get("turns", [])) for _, r in
                            jsonl_lines(str(mt.question_path))]))
    for name, texts in (extra or {}).items():
        out.append(EvalSet(name, "prepared", texts))
    return out


class _Loader(yaml.SafeLoader):
    """lm-eval task YAMLs use `!function` tags; read them as plain strings."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _lm_eval_sets(folder: Path, tasks: list[str]) -> list[EvalSet]:
    """The documents of every listed task defined in `folder` by a local JSON data file."""
    out = []
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        spec = yaml.load(path.read_text(), Loader=_Loader) or {}
        if spec.get("task") not in tasks:
            continue
        files = (spec.get("dataset_kwargs") or {}).get("data_files")
        files = list(files.values()) if isinstance(files, dict) else files
        for file in [files] if isinstance(files, str) else files or []:
            file = Path(file) if Path(file).is_absolute() else path.parent / file
            if file.is_file():
                out.append(EvalSet(f"lm_eval/{spec['task']}", str(file),
                                   [flat_text(r) for _, r in jsonl_lines(str(file))]))
    return out


def check(train_texts: list[str], sets: list[EvalSet], n: int, min_overlap: float,
          max_examples: int) -> list[Finding]:
    """Flag every evaluation example that one training row covers (>= min_overlap of its
    n-grams). The evaluation n-grams are indexed, the training rows streamed past them."""
    index: dict[tuple[str, ...], list[tuple[int, int]]] = {}
    sizes: list[list[int]] = []
    for s, es in enumerate(sets):
        sizes.append([])
        for e, text in enumerate(es.texts):
            g = grams(text, n)
            sizes[s].append(len(g))
            for gram in g:
                index.setdefault(gram, []).append((s, e))
    matches: dict[tuple[int, int], list[int]] = {}
    for r, text in enumerate(train_texts):
        shared = Counter(key for gram in grams(text, n) for key in index.get(gram, ()))
        for (s, e), count in shared.items():
            if count >= min_overlap * sizes[s][e]:
                matches.setdefault((s, e), []).append(r)
    findings = []
    for s, es in enumerate(sets):
        hit = sorted(e for (si, e) in matches if si == s)
        rows = sorted({r for e in hit for r in matches[(s, e)]})
        findings.append(Finding(
            es.name, es.source, len(es.texts), sum(1 for size in sizes[s] if size == 0),
            len(hit), [{"eval_index": e, "text": es.texts[e][:300],
                        "train_rows": matches[(s, e)][:5]} for e in hit[:max_examples]], rows))
    return findings
