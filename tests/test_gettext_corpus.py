"""hf_llm:gettext_en_<lang>: real pairs from gettext catalogs, held out by catalog, deterministic, HF's format."""

from __future__ import annotations

import os
import struct

import pytest

from hf_llm import gettext_corpus
from hf_llm.gettext_corpus import HELD_OUT, gettext_translation, held_out_splits
from hf_llm.recipes import RecipeError

HEADER = "Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n > 1);\n"


def write_mo(path, messages: dict[str, str]) -> None:
    """A GNU .mo file (the format msgfmt writes) of msgid -> msgstr; the header is added."""
    entries = sorted({"": HEADER, **messages}.items())
    ids, strs = [k.encode() for k, _ in entries], [v.encode() for _, v in entries]
    start = 7 * 4 + 16 * len(entries)
    table, data = [], b""
    for blob in ids + strs:
        table.append((len(blob), start + len(data)))
        data += blob + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, len(entries), 28, 28 + 8 * len(entries), 0, 0)
    body = b"".join(struct.pack("<2I", *t) for t in table)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(header + body + data)


def fake_locale(root, train_catalogs: int = 3, per_catalog: int = 40) -> str:
    folder = root / "fr" / "LC_MESSAGES"
    for i, name in enumerate([*HELD_OUT[0], *HELD_OUT[1]]):
        write_mo(str(folder / name), {f"Cannot read held out file {i} {j}": f"Impossible de lire {i} {j}"
                                      for j in range(per_catalog)})
    for c in range(train_catalogs):
        messages = {f"Cannot write file {c} {j}": f"Impossible d'écrire {c} {j}" for j in range(per_catalog)}
        messages.update({
            "Cannot read held out file 0 1": "doublon",  # a held-out source: kept in the held-out split only
            "menu\x04_Open the &file": "_Ouvrir le fichier",  # context dropped, accelerators removed
            "one apple\x00%d apples": "une pomme\x00%d pommes",  # a plural entry: skipped
            "%s %d %x %s": "%s %d %x %s",  # mostly format codes: skipped
        })
        write_mo(str(folder / f"train{c}.mo"), messages)
    return str(root)


def test_the_builder_holds_out_whole_catalogs_and_is_deterministic(tmp_path, monkeypatch):
    locale = fake_locale(tmp_path)
    monkeypatch.setattr(gettext_corpus, "MIN_TRAIN_PAIRS", 50)
    data = gettext_translation("fr", validation=30, locale_dir=locale)
    assert {split: len(rows) for split, rows in data.items()} == {"train": 3 * 40 + 1, "validation": 30,
                                                                  "test": 7 * 40 - 30 + 2 * 40}
    assert data["train"][0] == {"translation": {"en": "Cannot write file 0 0", "fr": "Impossible d'écrire 0 0"},
                                "catalog": "train0.mo"}
    train = list(data["train"])
    assert {"en": "Open the file", "fr": "Ouvrir le fichier"} in [r["translation"] for r in train]
    assert not any("apple" in r["translation"]["en"] or "%" in r["translation"]["en"] for r in train)
    sources = {r["translation"]["en"].lower() for r in train}
    for split, catalogs in (("validation", set(HELD_OUT[0])), ("test", set(HELD_OUT[0] + HELD_OUT[1]))):
        assert {r["catalog"] for r in data[split]} <= catalogs
        assert not sources & {r["translation"]["en"].lower() for r in data[split]}
    assert not {r["translation"]["en"] for r in data["validation"]} & {r["translation"]["en"] for r in data["test"]}
    again = gettext_translation("fr", validation=30, locale_dir=locale)
    assert all(list(data[split]) == list(again[split]) for split in data)
    assert list(gettext_translation("fr", validation=30, seed=1, locale_dir=locale)["validation"]) != list(data["validation"])


def test_too_few_catalogs_is_a_recipe_error_that_names_the_folder_and_the_alternatives(tmp_path):
    with pytest.raises(RecipeError) as error:
        gettext_translation("fr", locale_dir=str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "fr" / "LC_MESSAGES") in message and "0 catalogs" in message
    assert "data.dataset_name=hf_llm:demo_translation" in message and "data.train_file=" in message


def test_the_machines_catalogs_load_as_a_bundled_dataset():
    from hf_llm.data import load_bundled

    try:
        data = load_bundled("gettext_en_fr")
    except RecipeError as error:
        pytest.skip(f"this machine has too few French gettext catalogs: {error}")
    assert set(data) == {"train", "validation", "test"} and len(data["validation"]) == 300
    assert set(data["train"].features) == {"translation", "catalog"}
    assert set(data["validation"][0]["translation"]) == {"en", "fr"}
    held = set(HELD_OUT[0] + HELD_OUT[1])
    assert not {r["catalog"] for r in data["train"]} & held
    train = {s.lower() for s in (p["en"] for p in data["train"]["translation"])}
    for split in ("validation", "test"):
        assert {r["catalog"] for r in data[split]} <= held
        assert not train & {p["en"].lower() for p in data[split]["translation"]}
    first, second, _ = held_out_splits("fr")
    assert [r["source"] for r in gettext_corpus.pick_validation(first, second)[0]] == [p["en"] for p in data["validation"]["translation"]]


def test_a_model_card_names_the_catalogs_and_their_licences():
    from hf_llm.cards import data_description

    long, _, hub_id = data_description({"data": {"dataset_name": "hf_llm:gettext_en_fr"}})
    assert "gettext catalogs" in long and "licence" in long and hub_id is None
