"""Synthetic text for the embedded default: word lists, invented names and the generators of
reports, facts, stories and word lists (shared by the corpus, the lm-eval tasks, the MT-Bench
questions and the judge's training data).

Everything is generated from the word lists in this file with seeded `random.Random`s;
nothing is downloaded. Changing a list or the order of draws changes every embedded build.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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


def fact_qa_text(rng: random.Random, record: dict[str, str]) -> str:
    """A plain-text question and answer about one fact (pre-training corpus)."""
    questions, answer = FACT_QUESTIONS[rng.choice(list(FACT_QUESTIONS))]
    return f"Question: {rng.choice(questions)}\nAnswer: {answer}".format(**record)



def knowledge_base(seed: int) -> list[dict[str, str]]:
    """The knowledge base of a seed (the invented countries and their facts)."""
    return make_knowledge_base(make_lexicon(seed), seed)


def fact_question(record: dict[str, str], attribute: str,
                  rng: random.Random) -> tuple[str, str]:
    """(question, answer sentence) about one attribute, phrased as in the SFT data."""
    questions, answer = FACT_QUESTIONS[attribute]
    return rng.choice(questions).format(**record), answer.format(**record)


def list_task(rng: random.Random) -> tuple[str, str]:
    """(instruction, answer) for sorting or reversing a few nouns, phrased as in SFT data."""
    words = rng.sample(NOUNS, rng.randint(3, 5))
    if rng.random() < 0.5:
        return "Reverse this list: " + ", ".join(words), ", ".join(reversed(words))
    return "Sort these words alphabetically: " + ", ".join(words), ", ".join(sorted(words))
