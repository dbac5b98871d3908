"""The embedded corpus: the chat format, the SFT / held-out / preference data sets and the
pre-training texts of one build, generated from harness.embedded.text for a seed.

`make_corpus(seed)` returns the pre-training texts and every data file; the splits are
disjoint (no report, user message or held-out fact appears in two of them).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from harness.embedded.text import (
    FACT_QUESTIONS,
    NOUNS,
    STATUSES,
    Report,
    fact_qa_text,
    fact_sentences,
    list_text,
    make_knowledge_base,
    make_lexicon,
    make_report,
    story_text,
)

BOS, EOS, PAD = "<|bos|>", "<|end|>", "<|pad|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [PAD, BOS, EOS, *ROLE_TOKENS]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

SUMMARIZE_INSTRUCTION = "Summarize the following report in one sentence."

# Sizes of the generated data sets.
N_SFT_TRAIN = 2000
N_SFT_EVAL = 100
N_PERPLEXITY = 150
N_SUMMARIZE_TEST = 64
N_PREF_TRAIN = 600
N_PREF_TEST = 100

# Pre-training corpus (generic documents; never the chat format).
PRETRAIN_FACT_REPEATS = 20
PRETRAIN_REPORTS = 6000
PRETRAIN_STORIES = 2500
PRETRAIN_LISTS = 1500

# ---------------------------------------------------------------------------------------------
# Chat tasks: each family yields (user message, correct answer, wrong or incomplete answer)
# ---------------------------------------------------------------------------------------------


@dataclass
class Example:
    """One instruction: the user message, the correct answer and a rejected answer."""

    user: str
    answer: str
    rejected: str
    family: str

    def chat(self) -> dict[str, Any]:
        """The SFT row: a user turn and the correct assistant turn."""
        return {
            "messages": [
                {"role": "user", "content": self.user},
                {"role": "assistant", "content": self.answer},
            ]
        }

    def preference(self) -> dict[str, str]:
        """The preference row: prompt, chosen and rejected strings."""
        return {"prompt": self.user, "chosen": self.answer, "rejected": self.rejected}


SUMMARIZE_PHRASINGS = (
    SUMMARIZE_INSTRUCTION,
    "Write a one-sentence summary of this report.",
    "Give a short summary of the report below.",
)
REVERSE_PHRASINGS = ("Reverse this list: ", "Write these words in reverse order: ")
SORT_PHRASINGS = ("Sort these words alphabetically: ", "Put these words in A-Z order: ")


def summarize_prompt(document: str, instruction: str = SUMMARIZE_INSTRUCTION) -> str:
    """The user message for a summarization request."""
    return f"{instruction}\n\n{document}"


def summarize_example(rng: random.Random, report: Report) -> Example:
    """Summarize a report; rejected = a truncated summary or one with a wrong status."""
    f = report.fields
    if rng.random() < 0.5:
        rejected = "The {kind} project in {city} is {status}.".format(**f)
    else:
        wrong = rng.choice([s for s in STATUSES if s != f["status"]])
        rejected = report.summary.replace(f" is {f['status']} ", f" is {wrong} ")
    user = summarize_prompt(report.document, rng.choice(SUMMARIZE_PHRASINGS))
    return Example(user, report.summary, rejected, "summarize")


def fact_example(
    rng: random.Random, record: dict[str, str], attribute: str, kb: list[dict[str, str]]
) -> Example:
    """Ask for one attribute of one country; rejected = another country's value."""
    questions, answer = FACT_QUESTIONS[attribute]
    wrong = rng.choice(sorted({r[attribute] for r in kb} - {record[attribute]}))
    return Example(
        rng.choice(questions).format(**record),
        answer.format(**record),
        answer.format(**{**record, attribute: wrong}),
        "fact",
    )


def list_example(rng: random.Random) -> Example:
    """Reverse or sort 3-5 words; rejected = a wrong order or a dropped word."""
    words = rng.sample(NOUNS, rng.randint(3, 5))
    if rng.random() < 0.5:
        user, answer, family = rng.choice(REVERSE_PHRASINGS), list(reversed(words)), "reverse"
    else:
        user, answer, family = rng.choice(SORT_PHRASINGS), sorted(words), "sort"
    wrong = list(answer)
    if rng.random() < 0.5:
        del wrong[rng.randrange(len(wrong))]
    else:
        while wrong == answer:
            rng.shuffle(wrong)
    return Example(user + ", ".join(words), ", ".join(answer), ", ".join(wrong), family)


# ---------------------------------------------------------------------------------------------
# Data set assembly
# ---------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    """All generated texts of one build."""

    pretrain: list[str]
    files: dict[str, list[dict[str, Any]]]


class _Sampler:
    """Draws examples; reports and list tasks never repeat, fact splits are disjoint by fact."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"data-{seed}")
        self.lex = make_lexicon(seed)
        self.kb = make_knowledge_base(self.lex, seed)
        self.seen: set[str] = set()
        self.held_summaries: set[str] = set()  # summarize_test references: never a train answer
        facts = [(rec, attr) for rec in self.kb for attr in FACT_QUESTIONS]
        self.rng.shuffle(facts)
        self.held_facts, self.train_facts = facts[:24], facts[24:]

    def report(self) -> Report:
        """A report whose document was not drawn before and whose summary is not held out."""
        while True:
            rep = make_report(self.rng, self.lex)
            if rep.document not in self.seen and rep.summary not in self.held_summaries:
                self.seen.add(rep.document)
                return rep

    def _fresh(self, make: Any) -> Example:
        while True:
            ex = make()
            if ex.user not in self.seen:
                self.seen.add(ex.user)
                return ex

    def mix(self, n: int, facts: list[tuple[dict[str, str], str]]) -> list[Example]:
        """Half summarization, a quarter fact lookup, a quarter list tasks, shuffled."""
        rng = self.rng
        out = [summarize_example(rng, self.report()) for _ in range(n // 2)]
        out += [fact_example(rng, *rng.choice(facts), self.kb) for _ in range(n // 4)]
        while len(out) < n:
            out.append(self._fresh(lambda: list_example(rng)))
        rng.shuffle(out)
        return out


def make_corpus(seed: int) -> Corpus:
    """Generate the pre-training corpus and every data file for a seed.

    Held-out files (summarize_test, perplexity, sft_eval, preference_test) use fact questions
    that sft_train never asks, and no user message or report appears in two splits.
    """
    s = _Sampler(seed)
    summarize_test = [
        {"prompt": summarize_prompt(r.document), "document": r.document, "summary": r.summary}
        for r in (s.report() for _ in range(N_SUMMARIZE_TEST))
    ]
    s.held_summaries.update(row["summary"] for row in summarize_test)
    perplexity = [render_chat(ex.chat()["messages"]) for ex in s.mix(N_PERPLEXITY, s.held_facts)]
    sft_eval = s.mix(N_SFT_EVAL, s.held_facts)
    pref_test = s.mix(N_PREF_TEST, s.held_facts)
    sft_train = s.mix(N_SFT_TRAIN, s.train_facts)
    pref_train = s.mix(N_PREF_TRAIN, s.train_facts)
    return Corpus(
        pretrain=_pretrain_texts(s),
        files={
            "sft_train": [ex.chat() for ex in sft_train],
            "sft_eval": [ex.chat() for ex in sft_eval],
            "perplexity": [{"text": text} for text in perplexity],
            "summarize_test": summarize_test,
            "preference_train": [ex.preference() for ex in pref_train],
            "preference_test": [ex.preference() for ex in pref_test],
        },
    )


def render_chat(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """Render messages exactly as `CHAT_TEMPLATE` does (without needing a tokenizer)."""
    text = BOS + "".join(f"<|{m['role']}|>\n{m['content']}{EOS}\n" for m in messages)
    return text + ("<|assistant|>\n" if add_generation_prompt else "")


def _pretrain_texts(s: _Sampler) -> list[str]:
    """Generic documents: fresh reports, facts, stories and lists.

    Question/answer lines and list transformations give the base model latent skills that chat
    fine-tuning can elicit quickly; it never sees the chat format itself. Reports carry no
    summary, so summarizing is a skill fine-tuning must teach: the base model's ROUGE is low
    and a good trial's is clearly higher. Reports already used by a data split are skipped.
    """
    rng, texts = s.rng, []
    for _ in range(PRETRAIN_REPORTS):
        rep = make_report(rng, s.lex)
        if rep.document not in s.seen:
            texts.append(rep.document)
    texts += [story_text(rng, s.lex) for _ in range(PRETRAIN_STORIES)]
    texts += [list_text(rng) for _ in range(PRETRAIN_LISTS)]
    for _ in range(PRETRAIN_FACT_REPEATS):
        texts += fact_sentences(s.kb, rng)
        texts += [fact_qa_text(rng, rec) for rec in s.kb]
    rng.shuffle(texts)
    return texts


