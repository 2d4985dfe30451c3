"""A real English -> X parallel corpus from the machine's gettext catalogs (`hf_llm:gettext_en_fr`, ...).

Every program translated with GNU gettext installs a compiled catalog `<locale dir>/<lang>/LC_MESSAGES/<domain>.mo`
that maps its English user-interface messages (msgid) to their translation (msgstr). A Debian/Ubuntu machine
has dozens of them (coreutils, tar, bash, gnupg2, Linux-PAM, ...): tens of thousands of human-translated pairs,
offline. They are read at load time; nothing of them ships with hf_llm.

Pairs: singular entries only (plural entries and the header are skipped), the message context dropped, `&` and `_`
(menu accelerators) removed, whitespace collapsed; kept when short (source 3-100 characters, target 3-140), not
identical on both sides, mostly letters, of two words or more, and with at most two format codes or tags; the same
source (case-insensitive) is kept once.

Held out BY CATALOG, never by random rows: nine catalogs never reach train (`HELD_OUT`, the choice of
benchmarks/real_translation.py), so no source sentence of validation or test was seen in training. Validation is
300 pairs drawn (seeded) from the first seven, small enough to evaluate during training; test is every other
held-out pair. For French that is 39,111 / 300 / 4,281 pairs, and validation is the very set that
benchmarks/recipe_table.py validated on (`mt_test300.jsonl`).
"""

from __future__ import annotations

import gettext
import glob
import os
import random
import re
import struct

from .recipe_schema import RecipeError

LOCALE_DIR = "/usr/share/locale"
# Two groups of whole catalogs kept out of train. benchmarks/real_translation.py writes the first as its test
# split (mt_test.jsonl) and the second as its validation split (mt_validation.jsonl).
HELD_OUT = (
    ("tar.mo", "diffutils.mo", "findutils.mo", "sed.mo", "grep.mo", "wget.mo", "bash.mo"),
    ("gnupg2.mo", "coreutils.mo"),
)
MIN_TRAIN_PAIRS = 1000
# Target languages registered as bundled datasets `hf_llm:gettext_en_<lang>` (any other: `gettext_translation`).
LANGUAGES = ("fr", "de", "es", "it", "pt_BR", "ru", "ja", "zh_CN")


def clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("&", "").replace("_", " ")).strip()


def usable(source: str, target: str) -> bool:
    if not (3 <= len(source) <= 100 and 3 <= len(target) <= 140) or source == target:
        return False
    letters = sum(c.isalpha() for c in source)
    if letters < 0.6 * len(source) or len(source.split()) < 2:
        return False
    return source.count("%") + source.count("{") + source.count("<") <= 2


def catalog_pairs(path: str) -> list[tuple[str, str]]:
    """The usable (source, target) pairs of one .mo file, in the catalog's order ([] if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog
    except (OSError, ValueError, LookupError, struct.error):  # not a catalog, an unknown charset, truncated
        return []
    pairs = []
    for key, value in catalog.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            continue  # plural entries are (msgid, n) tuples; the header has the empty id
        source, target = clean(key.split("\x04")[-1]), clean(value)
        if usable(source, target):
            pairs.append((source, target))
    return pairs


def catalog_folder(target_lang: str, locale_dir: str = LOCALE_DIR) -> str:
    return os.path.join(locale_dir, target_lang, "LC_MESSAGES")


def held_out_splits(target_lang: str = "fr", locale_dir: str = LOCALE_DIR) -> tuple[list[dict], list[dict], list[dict]]:
    """Rows {"source", "target", "catalog"} of the two held-out groups and of train (every other catalog, sorted by
    file name), deduplicated in that order: a source of a held-out catalog never reappears in train."""
    by_catalog = {os.path.basename(path): catalog_pairs(path)
                  for path in sorted(glob.glob(os.path.join(catalog_folder(target_lang, locale_dir), "*.mo")))}
    held = {name for group in HELD_OUT for name in group}
    seen, out = set(), []
    for names in (*HELD_OUT, [name for name in by_catalog if name not in held]):
        rows = []
        for name in names:
            for source, target in by_catalog.get(name, []):
                if source.lower() in seen:
                    continue
                seen.add(source.lower())
                rows.append({"source": source, "target": target, "catalog": name})
        out.append(rows)
    return out[0], out[1], out[2]


def pick_validation(first: list[dict], second: list[dict], validation: int = 300,
                    seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Validation: `validation` rows of the first held-out group, shuffled with `seed`; test: the first group's
    other rows (in catalog order), then the second group's."""
    order = list(range(len(first)))
    random.Random(seed).shuffle(order)
    chosen = set(order[:validation])
    return [first[i] for i in order[:validation]], [row for i, row in enumerate(first) if i not in chosen] + second


def gettext_translation(target_lang: str = "fr", validation: int = 300, seed: int = 0,
                        locale_dir: str = LOCALE_DIR):
    """DatasetDict train / validation / test of {"translation": {"en": msgid, target_lang: msgstr}, "catalog"}."""
    from datasets import Dataset, DatasetDict

    first, second, train = held_out_splits(target_lang, locale_dir)
    if len(train) < MIN_TRAIN_PAIRS or len(first) < validation:
        folder = catalog_folder(target_lang, locale_dir)
        found = len(glob.glob(os.path.join(folder, "*.mo")))
        raise RecipeError(
            f"hf_llm:gettext_en_{target_lang} is built from this machine's gettext catalogs, and {folder}/*.mo gives "
            f"too few pairs ({found} catalogs; {len(train)} training pairs, {MIN_TRAIN_PAIRS} needed; {len(first)} pairs "
            f"in the held-out catalogs {', '.join(HELD_OUT[0])}, {validation} needed). Install translated programs "
            f"(their language packs), or train on other data: data.dataset_name=hf_llm:demo_translation (a small "
            f"synthetic en->fr grammar), or your own files: data.train_file=... data.validation_file=... (jsonl rows "
            f"{{\"translation\": {{\"en\": ..., \"{target_lang}\": ...}}}} or {{\"source\": ..., \"target\": ...}})."
        )
    validation_rows, test_rows = pick_validation(first, second, validation, seed)

    def dataset(rows: list[dict]):
        return Dataset.from_list([{"translation": {"en": r["source"], target_lang: r["target"]},
                                   "catalog": r["catalog"]} for r in rows])

    return DatasetDict(train=dataset(train), validation=dataset(validation_rows), test=dataset(test_rows))
