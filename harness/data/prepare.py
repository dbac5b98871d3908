"""The data preparation stage: training sets in, clean prepared JSONL and a data card out.

    prepare_data(cfg, sweep_dir, preference) -> Prepared (overrides pointing trials at the
                                                 prepared files, the card, cache hit or not)

Cached by content: the key hashes the bytes of every input (training files, held-out files,
the evaluation sets checked for contamination, the tokenizer) and every setting; an unchanged
key reuses `<data.prepare.cache_dir>/<key>/` across trials and sweeps, any change re-prepares.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.data.card import DataCard, SetCard, read_card, write_card
from harness.data.contamination import check, eval_sets
from harness.data.formats import PREFERENCE, SFT
from harness.data.sources import content_digest
from harness.data.stage import SetResult, prepare_set, read_set, require_rows, row_text, split

log = logging.getLogger(__name__)
PREPARE_VERSION = "2"    # bump when the stage's output for the same inputs changes
PARTNER = {"train": ("eval_loss", "validation"), "preference_train": ("preference.test", "test")}


@dataclass(frozen=True)
class Prepared:
    digest: str
    folder: Path
    card: DataCard
    overrides: list[str]
    reused: bool


def training_sets(data: DictConfig) -> list[tuple[str, str, str]]:
    """(name, config key, kind) of every training set of the data config (the preference set
    is prepared whenever it is configured: the preference metrics read its held-out part)."""
    out = [("train", "train", SFT)]
    pref = data.get("preference")
    if pref and pref.get("train") and pref.train.get("path"):
        out.append(("preference_train", "preference.train", PREFERENCE))
    return out


def _spec(data: DictConfig, key: str) -> DictConfig | None:
    spec = OmegaConf.select(data, key)
    return spec if spec is not None and spec.get("path") else None


def digest(cfg: DictConfig, preference: bool) -> str:
    """Content hash of everything preparation reads and every setting it uses."""
    data = cfg.data
    parts: dict = {"version": PREPARE_VERSION, "prepare": _plain(data.prepare),
                   "decontaminate": str(data.decontaminate), "sets": {},
                   "preference_trained": preference}
    for name, key, _ in training_sets(data):
        partner = PARTNER[name][0]
        parts["sets"][name] = [_plain(_spec(data, key)), content_digest(_spec(data, key)),
                               _plain(_spec(data, partner)), content_digest(_spec(data, partner))]
    ev = cfg.eval   # which evaluation sets are checked for contamination (not how they run)
    evals = {k: bool((ev.get(k) or {}).get("enabled", True))
             for k in ("perplexity", "rouge", "lm_eval", "mt_bench")}
    evals["lm_eval_tasks"] = _plain((ev.get("lm_eval") or {}).get("tasks"))
    evals["mt_bench_questions"] = str((ev.get("mt_bench") or {}).get("question_path"))
    parts["evals"] = [evals, {k: [_plain(_spec(data, k)), content_digest(_spec(data, k))]
                              for k in ("perplexity", "rouge")}]
    parts["eval_files"] = [_file_digest(cfg.eval.get("mt_bench"), "question_path"),
                           _folder_digest((cfg.eval.get("lm_eval") or {}).get("include_path"))]
    parts["tokenizer"] = _folder_digest(cfg.model.path, ("tokenizer.json", "tokenizer_config.json",
                                                         "chat_template.jinja"))
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _file_digest(node, key: str) -> str:
    path = (node or {}).get(key)
    return hashlib.sha256(Path(str(path)).read_bytes()).hexdigest() \
        if path and Path(str(path)).is_file() else str(path)


def _folder_digest(path, names: tuple[str, ...] | None = None) -> str:
    if not path or not Path(str(path)).is_dir():
        return str(path)
    h = hashlib.sha256()
    for item in sorted(Path(str(path)).iterdir()):
        if item.is_file() and (names is None or item.name in names):
            h.update(item.name.encode() + item.read_bytes())
    return h.hexdigest()


def prepare_data(cfg: DictConfig, card_dir: Path | None, preference: bool) -> Prepared:
    """Prepare (or reuse) the sweep's training sets; copy the card into `card_dir` (None: the
    caller writes `Prepared.card` itself, e.g. the driver once the sweep folder may exist)."""
    key = digest(cfg, preference)
    folder = Path(str(cfg.data.prepare.cache_dir)) / key
    card = read_card(folder)
    reused = card is not None
    if reused:
        print(f"data preparation: reusing {folder} (content hash {key})", flush=True)
    else:
        print(f"data preparation: preparing (content hash {key}) -> {folder}", flush=True)
        card = _build(cfg, folder, key, preference)
    if card_dir is not None:
        write_card(card, Path(card_dir))
    return Prepared(key, folder, card, overrides(card, cfg.data), reused)


def _build(cfg: DictConfig, folder: Path, key: str, preference: bool) -> DataCard:
    """Run the stage into a temporary folder, then move it into place (atomic for readers)."""
    data, prep = cfg.data, cfg.data.prepare
    count_tokens = _token_counter(cfg) if prep.filters.length.unit == "tokens" else None
    results: list[SetResult] = []
    for name, key_path, kind in training_sets(data):
        res = prepare_set(name, _spec(data, key_path), kind, f"data.{key_path}", prep,
                          count_tokens)
        partner_key, partner_split = PARTNER[name]
        partner = _spec(data, partner_key)
        if partner is None:
            if name == "train":
                fractions = {"train": prep.split.train, "validation": prep.split.validation,
                             "test": prep.split.test}
            else:   # preference pairs: everything held out -> data.preference.test
                fractions = {"train": prep.split.train,
                             "test": float(prep.split.validation) + float(prep.split.test)}
            split(res, fractions, int(prep.split.seed))
        else:
            _, rows = read_set(partner, kind, f"data.{partner_key}")
            res.splits[partner_split] = [r for _, r in rows]
            res.where[partner_split] = [w for w, _ in rows]
        require_rows(res)
        results.append(res)
    trained = [r for r in results if preference or r.kind == SFT]
    card_findings, dropped = _contamination(cfg, results, trained)
    for res in results:
        require_rows(res)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    lengths_of = _length_counter(cfg)
    sets = [_write_set(res, tmp, lengths_of, folder) for res in results]
    card = DataCard(key, str(data.decontaminate), int(prep.contamination.ngram),
                    float(prep.contamination.min_overlap), sets, card_findings, dropped)
    write_card(card, tmp)
    if folder.exists():
        shutil.rmtree(tmp)          # another process finished the same key first
        return read_card(folder) or card
    tmp.rename(folder)
    return card


def _contamination(cfg: DictConfig, results: list[SetResult], trained: list[SetResult]) \
        -> tuple[list[dict], int]:
    """Check the train split of every set the sweep trains on (`trained`) against the
    evaluation sets, held-out splits included; drop matches if asked."""
    mode, c = str(cfg.data.decontaminate), cfg.data.prepare.contamination
    if mode == "off":
        return [], 0
    held = {("eval_loss" if r.kind == SFT else "preference_test"):
            [row_text(x) for k, v in r.splits.items() if k != "train" for x in v]
            for r in results}
    sets = eval_sets(cfg, held)
    train = [(r, i) for r in trained for i in range(len(r.splits["train"]))]
    findings = check([row_text(r.splits["train"][i]) for r, i in train], sets,
                     int(c.ngram), float(c.min_overlap), int(c.max_examples))
    out = []
    bad = {idx for f in findings for idx in f.train_rows}
    for f in findings:
        for ex in f.flagged_examples:
            ex["train_rows"] = [train[i][0].where["train"][train[i][1]] for i in ex["train_rows"]]
        out.append({**f.__dict__, "train_rows": len(f.train_rows)})
        if f.flagged and mode == "warn":
            log.warning("contamination: %d of %d %s examples appear in the training rows",
                        f.flagged, f.examples, f.name)
    if mode == "drop" and bad:
        _drop(trained, train, bad)
    return out, len(bad) if mode == "drop" else 0


def _drop(results: list[SetResult], train: list[tuple[SetResult, int]], bad: set[int]) -> None:
    gone: dict[int, set[int]] = {}
    for idx in bad:
        res, j = train[idx]
        gone.setdefault(id(res), set()).add(j)
    for res in results:
        drop = gone.get(id(res), set())
        before = len(res.splits["train"])
        res.splits["train"] = [r for j, r in enumerate(res.splits["train"]) if j not in drop]
        res.where["train"] = [w for j, w in enumerate(res.where["train"]) if j not in drop]
        res.steps.append({"filter": "decontaminate", "before": before,
                          "after": len(res.splits["train"])})


def _token_counter(cfg: DictConfig):
    """len(tokens) with the sweep's tokenizer (its tokenizer.json, read by `tokenizers`, which
    loads in milliseconds where transformers takes seconds), or None when there is none."""
    path = Path(str(cfg.model.path)) / "tokenizer.json"
    if not path.is_file():
        log.warning("data card: no tokenizer.json in %s; lengths in words", cfg.model.path)
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


def _length_counter(cfg: DictConfig):
    """(unit, row -> length) for the card's histograms: tokens of the row's text."""
    count = _token_counter(cfg)
    if count is None:
        return "words", lambda row: len(row_text(row).split())
    return "tokens", lambda row: count(row_text(row))


def _write_set(res: SetResult, folder: Path, lengths_of, final: Path) -> SetCard:
    unit, length = lengths_of
    files, lengths = {}, {}
    for split_name, rows in res.splits.items():
        file = f"{res.name}.{split_name}.jsonl"
        with open(folder / file, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        files[split_name] = str(final / file)
        lengths[split_name] = [length(r) for r in rows]
    return SetCard(res.name, res.source, res.format, res.rows_in, len(res.splits["train"]),
                   res.steps, res.pii, res.exact, res.near, res.examples,
                   {k: len(v) for k, v in res.splits.items()}, unit, lengths, files,
                   res.drop_duplicates)


def overrides(card: DataCard, data: DictConfig) -> list[str]:
    """Hydra overrides that point the trials at the prepared files."""
    keys = {("train", "train"): "train", ("train", "validation"): "eval_loss",
            ("preference_train", "train"): "preference.train",
            ("preference_train", "test"): "preference.test"}
    fmt = {"train": "messages", "preference_train": "pairs"}
    out = []
    for s in card.sets:
        for split_name, file in s.files.items():
            key = keys.get((s.name, split_name))
            if key is None:
                continue   # the test split is for the user; no trial reads it
            out += [f"++data.{key}.path='{file}'", f"++data.{key}.format={fmt[s.name]}",
                    f"++data.{key}.fields={{}}"]
            if s.name == "train":
                out += [f"++data.{key}.messages_field=messages",
                        f"++data.{key}.prompt_field=null"]
    return out

