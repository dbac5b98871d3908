"""Data formats in, the same training rows out; filters, dedup and contamination counted."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.data.contamination import EvalSet, check
from harness.data.dedup import exact_duplicates, near_duplicates
from harness.data.filters import scrub
from harness.data.formats import PREFERENCE, SFT
from harness.data.stage import prepare_set, read_set, split
from harness.errors import DataError

Q, A, SYS = "Name a red fruit.", "A strawberry.", "Be brief."
CHAT = {"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": A}]}
SFT_ROWS = {
    "messages": CHAT,
    "prompt_completion": {"prompt": Q, "completion": A},
    "alpaca": {"instruction": "Name a red", "input": "fruit.", "output": A},
    "sharegpt": {"conversations": [{"from": "human", "value": Q}, {"from": "gpt", "value": A}]},
}
P, C, R = "Is the sky blue?", "Yes, on a clear day.", "No."
PAIR = {"prompt": [{"role": "user", "content": P}], "chosen": [{"role": "assistant", "content": C}],
        "rejected": [{"role": "assistant", "content": R}]}
PREF_ROWS = {
    "pairs": {"prompt": P, "chosen": C, "rejected": R},
    "hh_rlhf": {"chosen": f"\n\nHuman: {P}\n\nAssistant: {C}",
                "rejected": f"\n\nHuman: {P}\n\nAssistant: {R}"},
    "ultrafeedback": {"instruction": P, "completions": [
        {"response": "Maybe.", "overall_score": 5}, {"response": C, "overall_score": 9},
        {"response": R, "overall_score": 2}]},
}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _spec(path: Path, **kw) -> OmegaConf:
    return OmegaConf.create({"path": str(path), "split": "train", **kw})


@pytest.mark.parametrize("name", list(SFT_ROWS))
def test_every_sft_format_gives_the_same_training_rows(tmp_path, name):
    path = _jsonl(tmp_path / f"{name}.jsonl", [SFT_ROWS[name]] * 2)
    detected, rows = read_set(_spec(path), SFT, "data.train")
    assert detected == name
    expected = dict(CHAT)
    if name == "alpaca":   # instruction + blank line + input
        expected = {"messages": [{"role": "user", "content": "Name a red\n\nfruit."},
                                 {"role": "assistant", "content": A}]}
    assert [r for _, r in rows] == [expected, expected]
    fmt, again = read_set(_spec(path, format=name), SFT, "data.train")   # named, not detected
    assert (fmt, again) == (name, rows)


@pytest.mark.parametrize("name", list(PREF_ROWS))
def test_every_preference_format_gives_the_same_pairs(tmp_path, name):
    path = _jsonl(tmp_path / f"{name}.jsonl", [PREF_ROWS[name]])
    detected, rows = read_set(_spec(path), PREFERENCE, "data.preference.train")
    assert detected == name
    row = rows[0][1]
    assert {k: row[k] for k in ("prompt", "chosen", "rejected")} == PAIR
    if name == "ultrafeedback":   # the best vs the lowest-scored completion
        assert (row["score_chosen"], row["score_rejected"]) == (9.0, 2.0)


def test_json_parquet_and_save_to_disk_read_like_jsonl(tmp_path):
    import datasets

    rows = [SFT_ROWS["alpaca"], {**SFT_ROWS["alpaca"], "output": "A cherry."}]
    expected = read_set(_spec(_jsonl(tmp_path / "a.jsonl", rows)), SFT, "k")[1]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "a.parquet"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    for path in ("a.json", "a.parquet", "saved"):
        fmt, got = read_set(_spec(tmp_path / path), SFT, "k")
        assert fmt == "alpaca" and [r for _, r in got] == [r for _, r in expected], path


def test_renamed_fields(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", [{"question": Q, "answer": A}])
    fields = {"instruction": "question", "output": "answer"}
    fmt, rows = read_set(_spec(path, format="alpaca", fields=fields), SFT, "k")
    assert rows[0][1] == CHAT


def test_ambiguous_unknown_and_bad_rows_give_one_line(tmp_path):
    both = {**SFT_ROWS["messages"], **SFT_ROWS["sharegpt"]}
    cases = {
        "ambiguous": ([both], "ambiguous format: the row fits ['messages', 'sharegpt']"),
        "unknown": ([{"text": "hello"}], "no sft format fits the fields ['text']"),
        "missing": ([CHAT, {"messages": []}], ":2: missing field 'messages'"),
        "no_answer": ([{"messages": [{"role": "user", "content": Q}]}],
                      ":1: no assistant turn"),
    }
    for name, (rows, expected) in cases.items():
        path = _jsonl(tmp_path / f"{name}.jsonl", rows)
        with pytest.raises(DataError) as err:
            read_set(_spec(path), SFT, "data.train")
        assert expected in str(err.value) and "\n" not in str(err.value), name
        assert str(path) in str(err.value)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(CHAT) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        read_set(_spec(bad), SFT, "data.train")
    with pytest.raises(DataError, match="data.train.format: 'pairs' is a preference format"):
        read_set(_spec(bad, format="pairs"), SFT, "data.train")


def _prep_cfg(**over):
    base = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/data/_prepare.yaml")
    return OmegaConf.merge(base.prepare, over)


def test_row_empty_after_filtering_and_empty_split_name_the_place(tmp_path):
    path = _jsonl(tmp_path / "e.jsonl", [CHAT, {"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "   "}]}])
    with pytest.raises(DataError, match=r"e.jsonl:2: row is empty after filtering"):
        prepare_set("train", _spec(path), SFT, "data.train", _prep_cfg(), None)
    res = prepare_set("train", _spec(_jsonl(tmp_path / "o.jsonl", [CHAT])), SFT, "data.train",
                      _prep_cfg(), None)
    with pytest.raises(DataError, match=r"o.jsonl: split 'validation' is empty"):
        split(res, {"train": 0.95, "validation": 0.05}, 0)


def test_filters_dedup_pii_counted_exactly(tmp_path):
    rng = random.Random(0)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6))
             for _ in range(3000)]

    def sentence(n):
        return " ".join(rng.choice(vocab) for _ in range(n))

    rows = [{"prompt": sentence(30), "completion": sentence(30)} for _ in range(40)]
    base = rows[0]["completion"].split()
    rows += [{"prompt": rows[i]["prompt"].upper() + " !", "completion": rows[i]["completion"]}
             for i in (1, 2, 3)]                                    # 3 exact (normalised)
    long_rows = [{"prompt": sentence(60), "completion": sentence(60)} for _ in range(2)]
    near = [{"prompt": " ".join(long_rows[0]["prompt"].split()[:-1] + ["changed"]),
             "completion": long_rows[0]["completion"]}]
    rows += long_rows + near                                        # 1 near duplicate
    rows += [{"prompt": sentence(250), "completion": "x"} for _ in range(2)]   # 2 over-long
    rows += [{"prompt": "Mail bob@example.org or ann.lee@mail.co.uk from 10.0.0.12",
              "completion": "Call +1 415-555-0132 please " + " ".join(base[:5])}]
    path = _jsonl(tmp_path / "planted.jsonl", rows)
    cfg = _prep_cfg(filters={"length": {"max": 200}})
    res = prepare_set("train", _spec(path), SFT, "data.train", cfg, None)
    steps = {s["filter"]: s["before"] - s["after"] for s in res.steps}
    assert steps["length"] == 2 and steps["exact_dedup"] == 3 and steps["near_dedup"] == 1
    assert res.exact == 3 and res.near == 1
    assert res.pii == {"email": 2, "phone": 1, "ip": 1}
    assert len(res.splits["train"]) == len(rows) - 6
    assert {x["kind"] for x in res.examples} == {"exact", "near"}


def test_near_duplicates_and_scrub_units():
    text = " ".join(f"t{i}" for i in range(100))
    texts = [text, text.replace("t50", "changed"), " ".join(f"u{i}" for i in range(100))]
    assert near_duplicates(texts, 0.8, 128, 5) == {1: 0}
    assert exact_duplicates(["Hello, World", "hello world!", "other"]) == {1: 0}
    counts = Counter()
    assert scrub("ip 192.168.1.20 mail a@b.io", ["email", "phone", "ip"], counts) == \
        "ip <IP> mail <EMAIL>"
    assert (counts["email"], counts["ip"], counts["phone"]) == (1, 1, 0)


def test_contamination_flags_covered_examples_only():
    evals = [EvalSet("ppl", "f", [" ".join(f"e{i}_{j}" for j in range(20)) for i in range(5)]
                     + ["too short text"])]
    train = ["intro " + evals[0].texts[1] + " outro", "unrelated words " * 10,
             " ".join(evals[0].texts[3].split()[:12])]   # 12 words: below 13-gram coverage
    (f,) = check(train, evals, 13, 0.7, 10)
    assert (f.flagged, f.too_short, f.train_rows) == (1, 1, [0])
    assert f.flagged_examples[0]["eval_index"] == 1


def test_preference_filters_ties_margin_and_empty_turns(tmp_path):
    rows = [{"instruction": f"Question {i}?", "completions": [
        {"response": f"Good answer {i}.", "overall_score": 9},
        {"response": f"Weak answer {i}.", "overall_score": 9 - i}]} for i in range(1, 6)]
    rows.append({"instruction": "Tie?", "completions": [
        {"response": "Same.", "overall_score": 8}, {"response": "Same.", "overall_score": 1}]})
    rows.append({"instruction": "Empty?", "completions": [
        {"response": "Fine.", "overall_score": 8}, {"response": " ", "overall_score": 1}]})
    path = _jsonl(tmp_path / "uf.jsonl", rows)
    cfg = _prep_cfg(filters={"preference": {"min_margin": 3}})
    res = prepare_set("preference_train", _spec(path), PREFERENCE, "data.preference.train", cfg,
                      None)
    dropped = {s["filter"]: s["before"] - s["after"] for s in res.steps}
    assert (dropped["empty_turns"], dropped["ties"], dropped["margin"]) == (1, 1, 2)  # 1, 2 < 3
    assert [r["score_chosen"] - r["score_rejected"] for r in res.splits["train"]] == [3, 4, 5]
