"""`action=prepare` end to end: the card's counts, contamination, the content-hash cache, and
bad user data failing before the embedded build."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from harness.data.stage import SetResult, split
from tests.conftest import REPO, run_cli

EMBEDDED = REPO / ".cache" / "harness" / "embedded-v2"


def _perplexity_texts() -> list[str]:
    path = EMBEDDED / "data" / "perplexity.jsonl"
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def _planted_indices() -> list[int]:
    """20 perplexity texts copied into training: summarization ones (> 40 words; the set's
    fact questions repeat, so a copied one would rightly flag its twins too)."""
    texts = _perplexity_texts()
    return [i for i, t in enumerate(texts) if len(t.split()) > 40][:20]


def _hash(stdout: str) -> tuple[str, str]:
    """(preparing | reusing, content hash) from the driver's log line."""
    m = re.search(r"data preparation: (preparing|reusing) .*?([0-9a-f]{16})", stdout)
    assert m, stdout[-2000:]
    return m.group(1), m.group(2)


def _card(root: Path, sweep: str) -> dict:
    return json.loads((root / "sweeps" / sweep / "data" / "card.json").read_text())


def _planted_rows() -> list[dict]:
    rng = random.Random(0)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6))
             for _ in range(3000)]

    def sentence(n: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(n))

    rows = [{"prompt": sentence(30), "completion": sentence(30)} for _ in range(40)]
    rows += [{"prompt": rows[i]["prompt"].title() + "?", "completion": rows[i]["completion"]}
             for i in (1, 2, 3)]                                   # 3 exact duplicates
    long_row = {"prompt": sentence(60), "completion": sentence(60)}
    rows += [long_row, {"prompt": long_row["prompt"].rsplit(" ", 1)[0] + " changed",
                        "completion": long_row["completion"]}]      # 1 near duplicate
    rows += [{"prompt": sentence(250), "completion": "ok"} for _ in range(2)]   # 2 over-long
    rows += [{"prompt": "Write to bob@example.org and ann.lee@mail.co.uk from 10.0.0.12",
              "completion": "Or call +1 415-555-0132 " + sentence(5)}]  # 2 emails, 1 ip, 1 phone
    texts = _perplexity_texts()
    rows += [{"prompt": "Repeat this text.", "completion": texts[i]} for i in _planted_indices()]
    return rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Default embedded data once, then a planted file: warn, again (cache), drop, changed."""
    root = tmp_path_factory.mktemp("prepare")
    cache = f"data.prepare.cache_dir={root / 'prepared'}"
    out = {"root": root}
    out["embedded"] = run_cli(["action=prepare", "sweep.name=emb", cache], cwd=root)
    assert out["embedded"].returncode == 0, out["embedded"].stderr[-3000:]
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in _planted_rows()))
    args = ["action=prepare", cache, f"data.train.path={train}",
            "data.prepare.filters.length.max=200", "data.prepare.filters.dedup.drop=true"]
    for name, extra in (("a", []), ("b", []), ("c", ["data.decontaminate=drop"])):
        out[name] = run_cli([*args, f"sweep.name={name}", *extra], cwd=root)
        assert out[name].returncode == 0, out[name].stderr[-3000:]
    text = train.read_text()
    train.write_text(text.replace("ok", "oK", 1))                  # one character changed
    out["d"] = run_cli([*args, "sweep.name=d"], cwd=root)
    assert out["d"].returncode == 0, out["d"].stderr[-3000:]
    return out


def test_planted_duplicates_pii_and_long_rows_are_counted_exactly(runs):
    card = _card(runs["root"], "a")
    (train,) = [s for s in card["sets"] if s["name"] == "train"]
    assert train["format"] == "prompt_completion"
    assert (train["exact_duplicates"], train["near_duplicates"]) == (3, 1)
    assert train["pii"] == {"email": 2, "phone": 1, "ip": 1}
    dropped = {s["filter"]: s["before"] - s["after"] for s in train["steps"]}
    assert dropped["length"] == 2 and dropped["exact_dedup"] == 3 and dropped["near_dedup"] == 1
    assert train["rows_in"] == len(_planted_rows()) and train["rows_out"] == train["rows_in"] - 6
    assert train["length_unit"] == "tokens" and len(train["lengths"]["train"]) == \
        train["rows_out"]
    assert "duplicates: 3 exact, 1 near" in runs["a"].stdout       # the terminal card


def test_twenty_perplexity_texts_are_flagged_and_dropped(runs):
    warn = {f["name"]: f for f in _card(runs["root"], "a")["contamination"]}
    assert warn["perplexity"]["flagged"] == 20
    flagged = sorted(x["eval_index"] for x in warn["perplexity"]["flagged_examples"])
    assert len(_planted_indices()) == 20 and flagged == _planted_indices()
    drop = _card(runs["root"], "c")
    assert drop["dropped_contaminated"] == 20
    (train,) = [s for s in drop["sets"] if s["name"] == "train"]
    assert train["steps"][-1]["filter"] == "decontaminate"
    assert train["steps"][-1]["before"] - train["steps"][-1]["after"] == 20
    prepared = Path(train["files"]["train"]).read_text()
    assert "Repeat this text." not in prepared and prepared.count("\n") == train["rows_out"]


def test_embedded_data_is_clean(runs):
    card = _card(runs["root"], "emb")
    assert [f["name"] for f in card["contamination"]][:2] == ["perplexity", "rouge_references"]
    assert {f["name"] for f in card["contamination"]} >= {
        "lm_eval/embedded_facts_mc", "mt_bench", "eval_loss"}
    assert all(f["flagged"] == 0 for f in card["contamination"]), card["contamination"]
    (train,) = [s for s in card["sets"] if s["name"] == "train"]
    assert train["rows_in"] == train["rows_out"] == 2000     # kept: dedup.drop=false there


def test_preparation_runs_once_per_content_hash(runs):
    first, again, changed = (_hash(runs[k].stdout) for k in ("a", "b", "d"))
    assert first[0] == "preparing" and again == ("reusing", first[1])
    assert changed[0] == "preparing" and changed[1] != first[1]


def test_bad_user_data_fails_before_the_embedded_build(tmp_path):
    empty_cache = tmp_path / "cache"
    empty_cache.mkdir()
    env = {"HARNESS_CACHE": str(empty_cache)}
    missing = run_cli(["data.train.path=/missing.jsonl"], cwd=tmp_path, env=env, timeout=120)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "harness: error: /missing.jsonl: data path not found (data.train.path)"]
    ambiguous = tmp_path / "both.jsonl"
    ambiguous.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}],
                                     "conversations": [{"from": "human", "value": "a"}]}) + "\n")
    result = run_cli(["action=prepare", f"data.train.path={ambiguous}"], cwd=tmp_path, env=env,
                     timeout=120)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"{ambiguous}:1: ambiguous format" in line and "data.train.format" in line
    unknown = run_cli(["action=prepare", "data.train.format=yaml"], cwd=tmp_path, env=env,
                      timeout=120)
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines() == [
        "harness: error: data.train.format: data.<set>.format must be one of ['alpaca', "
        "'hh_rlhf', 'messages', 'pairs', 'prompt_completion', 'sharegpt', 'ultrafeedback'], "
        "got 'yaml'"]
    assert list(empty_cache.iterdir()) == []                   # no embedded build started
    assert not (tmp_path / "sweeps").exists()                  # nothing written


def test_split_is_seeded_and_95_5():
    rows = [{"messages": [{"role": "user", "content": str(i)}]} for i in range(200)]
    parts = []
    for _ in range(2):
        res = SetResult("train", "sft", "f", "messages", 200, splits={"train": list(rows)},
                        where={"train": [f"f:{i}" for i in range(200)]})
        split(res, {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=3)
        parts.append(res.where)
    assert parts[0] == parts[1]
    assert [len(parts[0][k]) for k in ("train", "validation", "test")] == [160, 20, 20]
    assert not set(parts[0]["train"]) & set(parts[0]["validation"])


def test_report_section_numbers_and_histograms(runs):
    from types import SimpleNamespace

    from harness.data.card import read_card
    from harness.report.figures import Figures
    from harness.report.sections.data_card import extract_data_card, render_data_card

    card = read_card(runs["root"] / "sweeps" / "a" / "data")
    info = extract_data_card(SimpleNamespace(data_card=card))
    train = info.sets[0]
    assert (train.exact, train.near, dict(train.pii)) == (3, 1, {"email": 2, "phone": 1, "ip": 1})
    assert {name: flagged for name, _, _, flagged in info.contamination}["perplexity"] == 20
    html = render_data_card(info, Figures())
    # one histogram per set, one trace per split: train + validation, train + test (pairs)
    assert len(re.findall(r'"name":"(train|validation|test) \(\d+\)"', html)) == 4
    assert html.count("length per row (tokens)") == 2
    assert "Contamination (13-gram overlap" in html
    assert not extract_data_card(SimpleNamespace(data_card=None)).present
