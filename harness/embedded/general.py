"""The embedded default's general task, for the forgetting check: `embedded_general_mc`.

Multiple choice between a fluent sentence from the pre-training generators (stories; never the
fine-tuning tasks) and three copies with two neighbouring words swapped. All four choices have
the same words, so the score measures general fluency learnt in pre-training, which
fine-tuning on summaries can erode (the report's forgetting check compares each trial with the
base model on it).

`ensure_general_task(root)` writes it next to the other embedded lm-eval tasks, once, with its
own marker (`GENERAL_INFO.json`, own version): adding it leaves the embedded build and eval
cache keys (EMBEDDED_VERSION, EVALS_VERSION) untouched, so no cached build is rebuilt. The data
file is written before the task YAML, each by an atomic rename, so a reader of the folder never
sees a task without its data.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from harness.embedded.text import make_lexicon, story_text

GENERAL_VERSION = "2"         # 2: neighbour swaps (1: full shuffles, too easy)
GENERAL_MARKER = "GENERAL_INFO.json"
TASK = "embedded_general_mc"
N_ROWS = 80

YAML = """task: embedded_general_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: ""
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def general_rows(seed: int = 0, n: int = N_ROWS) -> list[dict]:
    """A fluent story sentence vs three neighbour swaps of it (distinct from it and each other)."""
    rng = random.Random(f"general-{seed}")
    lex = make_lexicon(seed)
    rows: list[dict] = []
    while len(rows) < n:
        sentence = rng.choice(story_text(rng, lex).split(". ")).rstrip(".") + "."
        words = sentence.rstrip(".").split()
        if len(words) < 5:
            continue
        wrong: list[str] = []
        for _ in range(50):
            shuffled = words[:]
            i = rng.randrange(len(words) - 1)      # one swap of neighbours: a subtle error
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
            text = " ".join(shuffled) + "."
            if text != sentence and text not in wrong:
                wrong.append(text)
            if len(wrong) == 3:
                break
        if len(wrong) < 3:
            continue
        choices = [sentence, *wrong]
        rng.shuffle(choices)
        rows.append({"choices": choices, "label": choices.index(sentence)})
    return rows


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def ensure_general_task(root: str | Path, seed: int = 0) -> Path:
    """Write `root/evals/lm_eval/embedded_general_mc.yaml` and its data, once."""
    lm_dir = Path(root).absolute() / "evals" / "lm_eval"
    marker = lm_dir / GENERAL_MARKER
    try:
        if json.loads(marker.read_text()).get("version") == GENERAL_VERSION:
            return lm_dir / f"{TASK}.yaml"
    except (OSError, ValueError):
        pass
    lm_dir.mkdir(parents=True, exist_ok=True)
    data = lm_dir / "general_mc.jsonl"
    _atomic_write(data, "".join(json.dumps(r) + "\n" for r in general_rows(seed)))
    _atomic_write(lm_dir / f"{TASK}.yaml", YAML.format(data=json.dumps(str(data))))
    _atomic_write(marker, json.dumps({"version": GENERAL_VERSION, "seed": seed}) + "\n")
    return lm_dir / f"{TASK}.yaml"
