"""The embedded default: a tiny offline Llama model, its tokenizer and small data sets.

`build_embedded(root)` creates, once and deterministically for a seed, everything the harness
needs to run end to end without a model hub or internet:

- `model/`: a byte-level BPE tokenizer (with a chat template whose assistant turns sit in
  `{% generation %}` blocks) and a ~1.3M-parameter `LlamaForCausalLM`, briefly pre-trained on a
  generic synthetic corpus (reports, facts about invented countries, short stories, lists);
- `data/`: chat SFT data (report summarization, fact lookup, list reversal and sorting), held-out
  evaluation sets (perplexity texts, summarization pairs with ROUGE references) and
  preference pairs (chosen = correct and complete, rejected = wrong or truncated);
- `BUILD_INFO.json`: written last; its presence marks a complete build.

Everything is generated from word lists in this file; nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMBEDDED_VERSION = "2"

BUILD_INFO = "BUILD_INFO.json"
MODEL_DIR = "model"
DATA_DIR = "data"

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

# Tokenizer and model shape.
VOCAB_SIZE = 3072
MODEL_SHAPE: dict[str, int] = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 384,
    "max_position_embeddings": 512,
}

# Pre-training recipe (plain torch loop, 2 threads).
PRETRAIN_STEPS = 150
PRETRAIN_BATCH = 16
PRETRAIN_SEQ_LEN = 256
PRETRAIN_LR = 3e-3
PRETRAIN_WARMUP = 15
TORCH_THREADS = 2
PRETRAIN_FACT_REPEATS = 20
PRETRAIN_REPORTS = 6000
PRETRAIN_STORIES = 2500
PRETRAIN_LISTS = 1500

# ---------------------------------------------------------------------------------------------
# Word lists
# ---------------------------------------------------------------------------------------------

NOUNS = (
    "apple basket bottle bridge candle carpet castle cloud coin desk door drum engine feather "
    "garden glass hammer harbor helmet island jacket kettle ladder lamp lantern letter market "
    "mirror needle orchard paper pencil pillow pocket rabbit ribbon river rocket saddle school "
    "shovel silver spoon stone tower train tunnel valley wagon wallet window wheel whistle"
).split()
ADJECTIVES = (
    "bright calm clever cold dark dusty eager gentle golden green heavy hollow large loud "
    "narrow old pale quiet rapid red rough round sharp shiny silent slow small smooth soft "
    "steady strange sturdy tall tiny warm wide wild yellow young"
).split()
VERBS_PAST = (
    "built carried cleaned found fixed opened painted moved packed sold visited watched "
    "counted lifted measured ordered checked repaired"
).split()
PLACES = "bakery station library museum harbor factory market village farm school".split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = (
    "January February March April May June July August September October November December"
).split()
STATUSES = ("delayed", "on schedule", "ahead of schedule", "paused", "finished", "over budget")
REASONS = (
    "heavy rain",
    "a supplier strike",
    "missing parts",
    "a budget cut",
    "strong local support",
    "a new crane",
    "staff shortages",
    "a design change",
    "early deliveries",
    "a legal dispute",
    "extra volunteers",
    "a broken pump",
)
PROJECT_KINDS = ("bridge", "school", "railway", "harbor", "library", "tunnel", "park", "hospital")
EXPORTS = (
    "salt wool copper tea rice timber glass silk coffee marble honey paper cotton tin amber pepper"
).split()
FILLERS = (
    "The budget is {n} thousand credits.",
    "The next review is on {day}.",
    "{other} joined the team in {month}.",
    "The site office opens at {hour} in the morning.",
    "About {n} workers are on site each day.",
    "A report on the {noun} was filed in {month}.",
)
ONSETS = "b c d f g h k l m n p r s t v z br dr gr kl pl st tr sh th".split()
VOWELS = "a e i o u a e o ai ei ou".split()
CODAS = ["", "", "", "n", "r", "s", "l", "th", "m", "x"]


@dataclass
class Lexicon:
    """Invented names used by all generators."""

    first_names: list[str]
    last_names: list[str]
    cities: list[str]
    projects: list[str]
    countries: list[str]
    capitals: list[str]
    languages: list[str]


@dataclass
class Report:
    """A short templated project report and its reference one-sentence summary."""

    document: str
    summary: str
    fields: dict[str, str]


# ---------------------------------------------------------------------------------------------
# Lexicon, knowledge base and generators
# ---------------------------------------------------------------------------------------------


def _pseudo_word(rng: random.Random, syllables: int) -> str:
    """Return a pronounceable invented word with the given number of syllables."""
    parts = [rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(CODAS)).capitalize()


def _unique_words(
    rng: random.Random, n: int, taken: set[str], syllables: tuple[int, ...]
) -> list[str]:
    """Draw `n` distinct invented words not in `taken` (and add them to it)."""
    out: list[str] = []
    while len(out) < n:
        word = _pseudo_word(rng, rng.choice(syllables))
        if word not in taken and len(word) > 3:
            taken.add(word)
            out.append(word)
    return out


def make_lexicon(seed: int) -> Lexicon:
    """Generate the invented names (people, cities, projects, countries) for a seed."""
    rng = random.Random(f"lexicon-{seed}")
    taken: set[str] = set()
    countries = _unique_words(rng, 40, taken, (2, 3))
    return Lexicon(
        first_names=_unique_words(rng, 60, taken, (2,)),
        last_names=_unique_words(rng, 60, taken, (2, 3)),
        cities=_unique_words(rng, 12, taken, (2, 3)),
        projects=_unique_words(rng, 50, taken, (2,)),
        countries=countries,
        capitals=_unique_words(rng, len(countries), taken, (2, 3)),
        languages=[w + "ish" for w in _unique_words(rng, len(countries), taken, (1, 2))],
    )


def make_knowledge_base(lex: Lexicon, seed: int) -> list[dict[str, str]]:
    """One record per invented country: capital, language and main export."""
    rng = random.Random(f"kb-{seed}")
    return [
        {"country": c, "capital": cap, "language": lang, "export": rng.choice(EXPORTS)}
        for c, cap, lang in zip(lex.countries, lex.capitals, lex.languages, strict=True)
    ]


def _person(rng: random.Random, lex: Lexicon) -> str:
    return f"{rng.choice(lex.first_names)} {rng.choice(lex.last_names)}"


def make_report(rng: random.Random, lex: Lexicon) -> Report:
    """Generate a templated project report (3-6 sentences) and its one-sentence summary."""
    f = {
        "project": rng.choice(lex.projects),
        "kind": rng.choice(PROJECT_KINDS),
        "city": rng.choice(lex.cities),
        "owner": _person(rng, lex),
        "status": rng.choice(STATUSES),
        "reason": rng.choice(REASONS),
    }
    lead = rng.choice(
        [
            "{owner} leads the {project} {kind} project in {city}.",
            "The {project} {kind} project in {city} is led by {owner}.",
            "In {city}, {owner} runs the {project} {kind} project.",
        ]
    ).format(**f)
    status = rng.choice(
        [
            "The work is {status} because of {reason}.",
            "According to the team, the project is {status} due to {reason}.",
            "Because of {reason}, the work is now {status}.",
        ]
    ).format(**f)
    fillers = [
        t.format(
            n=rng.randint(2, 90),
            day=rng.choice(WEEKDAYS),
            month=rng.choice(MONTHS),
            other=_person(rng, lex),
            hour=rng.randint(6, 10),
            noun=rng.choice(NOUNS),
        )
        for t in rng.sample(FILLERS, rng.randint(1, 3))
    ]
    body = [status, *fillers]
    rng.shuffle(body)
    document = " ".join([lead, *body])
    summary = "The {kind} project in {city} is {status} because of {reason}."
    return Report(document=document, summary=summary.format(**f), fields=f)


def fact_sentences(kb: list[dict[str, str]], rng: random.Random) -> list[str]:
    """Plain-text statements of every fact, in varied phrasings (pre-training corpus)."""
    templates = [
        "The capital of {country} is {capital}.",
        "{capital} is the capital city of {country}.",
        "People in {country} speak {language}.",
        "The main language of {country} is {language}.",
        "{country} is known for its {export}.",
        "The main export of {country} is {export}.",
        "{country} is a small country. Its capital is {capital} and its people speak {language}.",
        "Traders from {country} sell {export} in the markets of {capital}.",
    ]
    return [rng.choice(templates).format(**rec) for rec in kb]


FACT_QUESTIONS = {
    "capital": (
        ["What is the capital of {country}?", "Name the capital city of {country}."],
        "{country}'s capital is {capital}.",
    ),
    "language": (
        ["Which language is spoken in {country}?", "What do people in {country} speak?"],
        "{country}'s people speak {language}.",
    ),
    "export": (
        ["What is the main export of {country}?", "What is {country} known for?"],
        "{country}'s main export is {export}.",
    ),
}


def story_text(rng: random.Random, lex: Lexicon) -> str:
    """A short generic story of 2-5 sentences about invented people and places."""
    name = rng.choice(lex.first_names)
    sentences = [
        f"{name} walked to the {rng.choice(PLACES)} in {rng.choice(lex.cities)} "
        f"on {rng.choice(WEEKDAYS)}."
    ]
    for _ in range(rng.randint(1, 4)):
        sentences.append(
            rng.choice(
                [
                    f"{name} {rng.choice(VERBS_PAST)} a {rng.choice(ADJECTIVES)} "
                    f"{rng.choice(NOUNS)}.",
                    f"The {rng.choice(NOUNS)} was {rng.choice(ADJECTIVES)} and "
                    f"{rng.choice(ADJECTIVES)}.",
                    f"Later, {name} met {_person(rng, lex)} near the {rng.choice(NOUNS)}.",
                    f"In {rng.choice(MONTHS)} the {rng.choice(PLACES)} {rng.choice(VERBS_PAST)} "
                    f"{rng.randint(2, 40)} {rng.choice(NOUNS)}s.",
                ]
            )
        )
    return " ".join(sentences)


def list_text(rng: random.Random) -> str:
    """A plain list of words, sometimes followed by its reversed or sorted form."""
    words = rng.sample(NOUNS, rng.randint(3, 5))
    head = rng.choice(["Shopping list:", "Items:", "Packed today:", "Inventory:"])
    text = f"{head} {', '.join(words)}."
    kind = rng.random()
    if kind < 0.3:
        text += f"\nReversed: {', '.join(reversed(words))}."
    elif kind < 0.6:
        text += f"\nSorted: {', '.join(sorted(words))}."
    return text


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


def fact_qa_text(rng: random.Random, record: dict[str, str]) -> str:
    """A plain-text question and answer about one fact (pre-training corpus)."""
    questions, answer = FACT_QUESTIONS[rng.choice(list(FACT_QUESTIONS))]
    return f"Question: {rng.choice(questions)}\nAnswer: {answer}".format(**record)


# ---------------------------------------------------------------------------------------------
# Tokenizer and model
# ---------------------------------------------------------------------------------------------


def train_tokenizer(texts: list[str]) -> Any:
    """Train a byte-level BPE tokenizer and wrap it as a chat-ready `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS,
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(tokenizer: Any, seed: int) -> Any:
    """A freshly initialised tiny `LlamaForCausalLM` sized to the tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_theta=10000.0,
        **MODEL_SHAPE,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def pack_tokens(tokenizer: Any, texts: list[str], seq_len: int) -> Any:
    """Tokenize `<bos> text <eos>` documents, concatenate and cut into `seq_len` blocks."""
    import torch

    ids: list[int] = []
    for enc in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False):
        ids += [tokenizer.bos_token_id, *enc.ids, tokenizer.eos_token_id]
    n_blocks = len(ids) // seq_len
    return torch.tensor(ids[: n_blocks * seq_len]).view(n_blocks, seq_len)


def pretrain(model: Any, blocks: Any, *, seed: int, progress: bool) -> float:
    """Causal-LM pre-training with AdamW and warmup+cosine; returns the final smoothed loss."""
    import torch
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=PRETRAIN_LR, weight_decay=0.01, betas=(0.9, 0.95)
    )

    def lr_at(step: int) -> float:
        if step < PRETRAIN_WARMUP:
            return (step + 1) / PRETRAIN_WARMUP
        frac = (step - PRETRAIN_WARMUP) / max(1, PRETRAIN_STEPS - PRETRAIN_WARMUP)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    order = _batch_order(len(blocks), PRETRAIN_STEPS * PRETRAIN_BATCH, gen)
    model.train()
    smooth = float("nan")
    bar = tqdm(range(PRETRAIN_STEPS), desc="pretrain embedded model", disable=not progress)
    for step in bar:
        batch = blocks[order[step * PRETRAIN_BATCH : (step + 1) * PRETRAIN_BATCH]]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        value = loss.item()
        smooth = value if math.isnan(smooth) else 0.95 * smooth + 0.05 * value
        bar.set_postfix(loss=f"{smooth:.3f}")
    model.eval()
    return smooth


def _batch_order(n_blocks: int, n_needed: int, gen: Any) -> Any:
    """Concatenated random permutations of block indices, at least `n_needed` long."""
    import torch

    perms = [torch.randperm(n_blocks, generator=gen) for _ in range(math.ceil(n_needed / n_blocks))]
    return torch.cat(perms)


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def weights_hash(model_dir: str | Path) -> str:
    """SHA-256 of the saved model weights (to compare builds)."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def is_complete(root: str | Path, seed: int | None = None) -> bool:
    """True if `root` holds a finished build of this version (and of `seed`, if given)."""
    marker = Path(root) / BUILD_INFO
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("version") == EMBEDDED_VERSION and (seed is None or info.get("seed") == seed)


@contextlib.contextmanager
def _torch_settings(threads: int) -> Iterator[None]:
    """Fix thread count, RNG state and deterministic mode for the build; restore them after."""
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _build_into(out: Path, seed: int, progress: bool) -> None:
    """Generate data, train tokenizer and model, and write everything (marker last) into `out`."""
    start = time.time()
    corpus = make_corpus(seed)
    data_dir = out / DATA_DIR
    data_dir.mkdir(parents=True)
    for name, rows in corpus.files.items():
        _write_jsonl(data_dir / f"{name}.jsonl", rows)

    sft_texts = [m["content"] for r in corpus.files["sft_train"] for m in r["messages"]]
    tokenizer = train_tokenizer(corpus.pretrain + sft_texts)
    with _torch_settings(TORCH_THREADS):
        model = make_model(tokenizer, seed)
        blocks = pack_tokens(tokenizer, corpus.pretrain, PRETRAIN_SEQ_LEN)
        final_loss = pretrain(model, blocks, seed=seed, progress=progress)
    model.save_pretrained(out / MODEL_DIR)
    tokenizer.save_pretrained(out / MODEL_DIR)

    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    info = {
        "version": EMBEDDED_VERSION,
        "seed": seed,
        "seconds": round(time.time() - start, 2),
        "pretrain_final_loss": round(final_loss, 4),
        "pretrain_steps": PRETRAIN_STEPS,
        "pretrain_tokens": PRETRAIN_STEPS * PRETRAIN_BATCH * PRETRAIN_SEQ_LEN,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "weights_sha256": weights_hash(out / MODEL_DIR),
        "files": files,
    }
    (out / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")


def build_embedded(root: str | Path, *, seed: int = 0, progress: bool = True) -> Path:
    """Build the embedded model+data under `root` if not already complete; return root.

    Idempotent: a complete build (marked by `BUILD_INFO.json`, written last) is reused. Safe
    when several processes call it at once: a file lock beside `root` serialises builders, and
    each build is written to a temporary sibling folder that is renamed to `root` at the end,
    so readers never see a half-written build. A build of another seed or version at `root` is
    replaced. Deterministic for a seed.
    """
    from filelock import FileLock

    root = Path(root).absolute()
    if is_complete(root, seed):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if is_complete(root, seed):
            return root
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _build_into(tmp, seed, progress)
            if root.exists():
                shutil.rmtree(root)
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root
