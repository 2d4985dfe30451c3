"""Bundled demo datasets for the fine-tuning tasks, made by the project or drawn from the machine.

All are deterministic (seeded) and offline; recipes load them as `data.dataset_name: "hf_llm:<name>"`.

- `gettext_en_fr` (and `gettext_en_de`, `_es`, ... : `gettext_corpus.LANGUAGES`): real English -> French pairs,
  the user-interface messages of the machine's gettext catalogs (/usr/share/locale/fr/LC_MESSAGES/*.mo), held
  out by catalog; built at load time by `gettext_corpus.gettext_translation` (the default of translation_tiny).
- `demo_translation`: English -> French sentences from a small hand-written grammar (numbers with gender,
  adjectives that agree and move — "three small red cars" -> "trois petites voitures rouges" — articles
  with elision, five sentence frames). Rows in HF's format `{"translation": {"en": ..., "fr": ...}}`.
- `demo_summarization`: the standard library's docstrings; `document` = the object's name and the
  docstring body, `summary` = its first line (PEP 257's summary line). Split by module.
- `demo_dialogue`: multi-turn chats (`messages` of `{role, content}`) about standard-library objects:
  what does X do (the docstring's first line), which module is it in, what kind of object is it.
- `demo_sentiment`: review sentences from templates, with negation ("was not bad"), labelled
  "positive" / "negative" (`text` / `label`).
"""

from __future__ import annotations

import random
from functools import partial

from datasets import Dataset, DatasetDict

from .gettext_corpus import LANGUAGES, gettext_translation

# --------------------------------------------------------------------------------------------------
# English -> French
NOUNS = [  # en singular, en plural, fr singular, fr plural, gender, starts with a vowel sound
    ("cat", "cats", "chat", "chats", "m"), ("dog", "dogs", "chien", "chiens", "m"),
    ("house", "houses", "maison", "maisons", "f"), ("car", "cars", "voiture", "voitures", "f"),
    ("book", "books", "livre", "livres", "m"), ("tree", "trees", "arbre", "arbres", "m"),
    ("flower", "flowers", "fleur", "fleurs", "f"), ("bird", "birds", "oiseau", "oiseaux", "m"),
    ("table", "tables", "table", "tables", "f"), ("apple", "apples", "pomme", "pommes", "f"),
    ("child", "children", "enfant", "enfants", "m"), ("window", "windows", "fenêtre", "fenêtres", "f"),
    ("horse", "horses", "cheval", "chevaux", "m"), ("boat", "boats", "bateau", "bateaux", "m"),
    ("letter", "letters", "lettre", "lettres", "f"), ("chair", "chairs", "chaise", "chaises", "f"),
]
COLOURS = {  # after the noun: m sg, f sg, m pl, f pl
    "red": ("rouge", "rouge", "rouges", "rouges"), "black": ("noir", "noire", "noirs", "noires"),
    "green": ("vert", "verte", "verts", "vertes"), "blue": ("bleu", "bleue", "bleus", "bleues"),
    "white": ("blanc", "blanche", "blancs", "blanches"), "grey": ("gris", "grise", "gris", "grises"),
}
SIZES = {  # before the noun
    "small": ("petit", "petite", "petits", "petites"), "big": ("grand", "grande", "grands", "grandes"),
}
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
NOMBRES = ["un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix", "onze", "douze"]
PLACES = [("garden", "jardin", "m"), ("street", "rue", "f"), ("kitchen", "cuisine", "f"), ("park", "parc", "m")]
VOWELS = tuple("aeiouéèêh")


def _agree(forms: tuple[str, str, str, str], gender: str, plural: bool) -> str:
    return forms[(2 if plural else 0) + (1 if gender == "f" else 0)]


def _noun_phrase(rng: random.Random, article: str) -> tuple[str, str, bool, str]:
    """(English, French, plural, gender) noun phrase: [article or number] [size] noun [colour]."""
    en_sg, en_pl, fr_sg, fr_pl, gender = rng.choice(NOUNS)
    count = rng.randint(1, len(NUMBERS)) if article == "number" else rng.choice([1, 2])
    plural = count > 1
    size = rng.choice([None, *SIZES]) if rng.random() < 0.5 else None
    colour = rng.choice([None, *COLOURS]) if rng.random() < 0.6 else None
    en_words = [en_pl if plural else en_sg]
    fr_words = [fr_pl if plural else fr_sg]
    if size:
        en_words.insert(0, size)
        fr_words.insert(0, _agree(SIZES[size], gender, plural))
    if colour:
        en_words.insert(1 if size else 0, colour)
        fr_words.append(_agree(COLOURS[colour], gender, plural))
    if article == "number":
        en_words.insert(0, NUMBERS[count - 1])
        fr_words.insert(0, "une" if count == 1 and gender == "f" else NOMBRES[count - 1])
    else:  # definite article
        en_words.insert(0, "the")
        if plural:
            fr_words.insert(0, "les")
        elif fr_words[0].startswith(VOWELS):
            fr_words[0] = "l'" + fr_words[0]
        else:
            fr_words.insert(0, "la" if gender == "f" else "le")
    return " ".join(en_words), " ".join(fr_words), plural, gender


def translation_pair(rng: random.Random) -> dict[str, str]:
    frame = rng.randrange(5)
    if frame == 0:
        en, fr, _, _ = _noun_phrase(rng, "number")
        return {"en": f"I see {en}.", "fr": f"Je vois {fr}."}
    if frame == 1:
        en, fr, _, _ = _noun_phrase(rng, "number")
        return {"en": f"We have {en}.", "fr": f"Nous avons {fr}."}
    if frame == 2:
        en, fr, _, _ = _noun_phrase(rng, "the")
        return {"en": f"You like {en}.", "fr": f"Tu aimes {fr}."}
    if frame == 3:
        en, fr, plural, gender = _noun_phrase(rng, "the")
        colour = rng.choice(list(COLOURS))
        verb_en, verb_fr = ("are", "sont") if plural else ("is", "est")
        return {"en": f"{en.capitalize()} {verb_en} {colour}.",
                "fr": f"{fr[0].upper() + fr[1:]} {verb_fr} {_agree(COLOURS[colour], gender, plural)}."}
    en, fr, _, _ = _noun_phrase(rng, "number")
    place_en, place_fr, gender = rng.choice(PLACES)
    article = "la" if gender == "f" else "le"
    return {"en": f"There are {en} in the {place_en}.", "fr": f"Il y a {fr} dans {article} {place_fr}."}


def demo_translation(train: int = 6000, validation: int = 300, seed: int = 0) -> DatasetDict:
    rng = random.Random(seed)
    seen, rows = set(), []
    while len(rows) < train + validation:
        pair = translation_pair(rng)
        if pair["en"] not in seen:
            seen.add(pair["en"])
            rows.append({"translation": pair})
    return DatasetDict(train=Dataset.from_list(rows[:train]), validation=Dataset.from_list(rows[train:]))


# --------------------------------------------------------------------------------------------------
# Docstring-based tasks
def _docstring_splits() -> dict[str, list[dict]]:
    from . import corpus

    return {
        split: [d for d in documents if d["kind"] != "topic"] for split, documents in corpus.load_splits().items()
    }


def demo_summarization() -> DatasetDict:
    """document = name + docstring body, summary = the docstring's first line."""
    out = {}
    for split, documents in _docstring_splits().items():
        rows = []
        for d in documents:
            first, _, body = d["text"].partition("\n")
            body = body.strip()
            if 20 <= len(first) <= 120 and len(body) >= 80:
                rows.append({"document": f"{d['name']}\n{body[:1500]}", "summary": first.strip()})
        out[split] = Dataset.from_list(rows)
    return DatasetDict(out)


def demo_dialogue(seed: int = 0) -> DatasetDict:
    rng = random.Random(seed)
    out = {}
    for split, documents in _docstring_splits().items():
        rows = []
        for d in documents:
            if d["kind"] not in ("function", "class"):
                continue
            first = d["text"].split("\n", 1)[0].strip()
            if not 15 <= len(first) <= 100:
                continue
            name = f"{d['module']}.{d['name']}"
            messages = []
            if rng.random() < 0.3:
                messages.append({"role": "system", "content": "You answer questions about the Python standard library."})
            messages += [{"role": "user", "content": f"What does {name} do?"},
                         {"role": "assistant", "content": first}]
            follow_up = rng.random()
            if follow_up < 0.4:
                messages += [{"role": "user", "content": "Which module is it in?"},
                             {"role": "assistant", "content": f"It is in the {d['module']} module."}]
            elif follow_up < 0.7:
                messages += [{"role": "user", "content": "Is it a class or a function?"},
                             {"role": "assistant", "content": f"It is a {d['kind']}."}]
            rows.append({"messages": messages})
        out[split] = Dataset.from_list(rows)
    return DatasetDict(out)


# --------------------------------------------------------------------------------------------------
ITEMS = ["movie", "book", "meal", "hotel", "phone", "concert", "game", "service", "album", "course", "camera", "show"]
GOOD = ["great", "wonderful", "excellent", "delightful", "superb", "good", "brilliant", "lovely", "fantastic"]
BAD = ["terrible", "awful", "boring", "bad", "disappointing", "poor", "dreadful", "dull", "horrible"]
LIKE = ["loved", "enjoyed", "adored", "liked"]
DISLIKE = ["hated", "disliked", "regretted", "could not stand"]


def sentiment_example(rng: random.Random) -> dict[str, str]:
    item = rng.choice(ITEMS)
    positive = rng.random() < 0.5
    frame = rng.randrange(4)
    if frame == 0:
        text = f"The {item} was {rng.choice(GOOD if positive else BAD)}."
    elif frame == 1:  # negation flips the adjective
        text = f"The {item} was not {rng.choice(BAD if positive else GOOD)}."
    elif frame == 2:
        text = f"I {rng.choice(LIKE if positive else DISLIKE)} this {item}."
    else:
        text = (f"What a {rng.choice(GOOD if positive else BAD)} {item}, "
                f"I would {'gladly' if positive else 'never'} go again.")
    if rng.random() < 0.3:
        text += rng.choice([" Honestly.", " Really.", " That is all.", " Ten out of ten." if positive else " Zero stars."])
    return {"text": text, "label": "positive" if positive else "negative"}


def demo_sentiment(train: int = 3000, validation: int = 300, seed: int = 0) -> DatasetDict:
    rng = random.Random(seed)
    rows = [sentiment_example(rng) for _ in range(train + validation)]
    return DatasetDict(train=Dataset.from_list(rows[:train]), validation=Dataset.from_list(rows[train:]))


DEMO_DATASETS = {
    **{f"gettext_en_{lang}": partial(gettext_translation, lang) for lang in LANGUAGES},
    "demo_translation": demo_translation,
    "demo_summarization": demo_summarization,
    "demo_dialogue": demo_dialogue,
    "demo_sentiment": demo_sentiment,
}


def demo_dataset(name: str) -> DatasetDict:
    return DEMO_DATASETS[name]()
