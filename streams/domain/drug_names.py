"""Drug name resolution: a prescribed name reduced to the knowledge base's ingredient keys."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping
from typing import Final

__all__ = [
    "NAME_RULES_DIGEST",
    "basic_normalise",
    "is_resolved",
    "resolve_name",
    "resolve_single",
    "strip_salts",
]

# Words that describe the product rather than the substance (dosage forms, release
# mechanisms, devices, strengths, sig abbreviations); prescriptions spell the same ingredient
# with any of them, so they must not change the key an ingredient matches on. Route words are
# among them: route detection reads the raw name, never this key.
# fmt: off
_FORM_WORDS: Final = frozenset({
    "tablet", "tablets", "tab", "tabs", "caplet", "caplets", "capsule", "capsules", "cap",
    "caps", "softgel", "softgels", "gelcap", "gelcaps", "oral", "solution", "soln", "sol",
    "suspension", "susp", "syrup", "syr", "elixir", "elix", "liquid", "liq", "concentrate",
    "conc", "drops", "drop", "injection", "injectable", "inj", "intravenous", "iv", "im",
    "intramuscular", "subcutaneous", "subq", "sc", "sq", "po", "topical", "transdermal",
    "patch", "patches", "cream", "crm", "ointment", "oint", "gel", "lotion", "foam", "shampoo",
    "wash", "paste", "ophthalmic", "ophth", "otic", "nasal", "spray", "inhaler", "inhalation",
    "aerosol", "nebulizer", "neb", "respules", "hfa", "mdi", "diskus", "ellipta",
    "respimat", "handihaler", "flexhaler", "twisthaler", "redihaler", "respiclick", "powder",
    "granules", "sprinkle", "sprinkles", "suppository", "supp", "rectal", "enema", "vaginal",
    "sublingual", "sl", "subl", "buccal", "lozenge", "troche", "chewable", "chew", "wafer",
    "dispersible", "disintegrating", "odt", "effervescent", "film", "coated", "film-coated",
    "enteric", "enteric-coated", "ec", "delayed", "extended", "sustained", "controlled",
    "modified", "immediate", "release", "ext", "rel", "er", "xr", "sr", "cr", "dr", "xl",
    "la", "ir", "cd", "cc", "xt", "ds", "micronized", "micronised", "vial", "vials",
    "ampule", "ampoule", "syringe", "prefilled", "pen", "pens", "flexpen", "kwikpen",
    "solostar", "flextouch", "penfill", "autoinjector", "auto-injector", "kit", "pack",
    "blister", "dose", "doses", "pump", "usp", "otc", "low", "low-dose", "strength", "extra",
    "maximum", "double", "jr", "daily", "bid", "tid", "qid", "qd", "qod", "qhs",
    "hs", "qam", "qpm", "prn", "nightly", "weekly",
})
# Units: dropped as words, but kept inside a hyphenated name ("l-methylfolate").
_UNIT_WORDS: Final = frozenset({
    "mg", "mcg", "µg", "ug", "g", "gm", "kg", "ml", "l", "meq", "mmol", "unit", "units", "iu",
    "hr", "hrs", "hour", "hours", "h", "%", "per",
})
# fmt: on

# Salt, ester and hydrate moieties; dropped only when the rest is a known ingredient or
# synonym, so that "potassium chloride" or "magnesium sulfate" keep their identity.
# fmt: off
_SALT_WORDS: Final = frozenset({
    "sodium", "disodium", "monosodium", "semisodium", "potassium", "calcium", "magnesium",
    "hydrochloride", "hcl", "dihydrochloride", "hydrobromide", "hbr", "succinate",
    "ethylsuccinate", "estolate", "lactobionate", "tartrate", "bitartrate", "sulfate",
    "sulphate", "bisulfate", "maleate", "besylate", "besilate", "mesylate", "mesilate",
    "dimesylate", "tosylate", "citrate", "fumarate", "hemifumarate", "acetate", "phosphate",
    "bromide", "chloride", "carbonate", "bicarbonate", "lactate", "gluconate", "nitrate",
    "hyclate", "hydrate", "monohydrate", "dihydrate", "trihydrate", "sesquihydrate",
    "hemihydrate", "pentahydrate", "anhydrous", "tromethamine", "propionate", "dipropionate",
    "valerate", "furoate", "xinafoate", "acetonide", "oxalate", "napsylate", "pamoate",
    "stearate", "decanoate", "enanthate", "cypionate", "undecanoate", "palmitate",
    "aspartate", "saccharate", "polistirex", "tannate", "medoxomil", "axetil", "etexilate",
    "base",
})
# fmt: on

# A strength ("5", "2.5mg", "800-160", "0.4mg/hr"), a unit glued to the next strength
# ("mg-160" in "800 mg-160 mg"), a dispensed count ("#30") or a sig interval ("q12h");
# "5-fluorouracil" is none of these and stays.
_DOSE_TOKEN: Final = re.compile(
    r"^(?:\d[\d.,]*|\.\d+)(?:-\d[\d.,]*)*(?:[a-zµ%/][\w%/.µ-]*)?$"
    r"|^(?:mg|mcg|µg|g|ml|meq|units?|iu)-\d[\w%/.µ-]*$"
    r"|^#\d+$"
    r"|^q\d+(?:-\d+)?(?:h|hr|hrs)$"
)
_MARKS: Final = ("®", "™", "©", "℠", "(r)", "(tm)")
_BRACKETED: Final = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
# "Tylenol #3" and "Tylenol No. 3" are acetaminophen with codeine; the number alone would be
# dropped as a count and leave plain acetaminophen, missing the opioid.
_TYLENOL_CODEINE: Final = re.compile(r"\btylenol\s*(?:#|no\b\.?)\s*[1-4]\b")
# "No. 30" and "# 30" are counts: written "#30" they drop out as one.
_NUMBER_SIGN: Final = re.compile(r"(?:\bno\b\.?|#)\s*(?=\d)")
# Dotted initialisms ("E.E.S.", "A.S.A.") read as the abbreviation they spell.
_INITIALISM: Final = re.compile(r"\b(?:[a-z]\.){2,}")
# A period ends a word ("tab.", "Ext.") unless it starts a decimal (".5", "0.4").
_PERIOD: Final = re.compile(r"\.(?!\d)")
# Anything else that is not part of a name, a strength or a separator is noise.
_NOISE: Final = re.compile(r"[^\w\s/+,;.%#µ-]")
_DASHES: Final = re.compile(r"[\u2010-\u2015\u2212]")
_SEPARATORS: Final = re.compile(r"\s*(?:/\s*)+")
_COMBINATION_WORDS: Final = re.compile(r"\s+(?:and|with)\s+")
# "Tylenol w/ codeine": the slash of "w/" is not a separator of its own.
_WITH: Final = re.compile(r"\bw/")

# Names everything above and the resolution steps below: a change to either can change what
# a stored name resolves to, so the knowledge base fingerprint includes it. Raise the version
# when the steps change without a change to the word lists or patterns.
_RESOLUTION_VERSION: Final = 2
NAME_RULES_DIGEST: Final = hashlib.sha256(
    json.dumps(
        [
            _RESOLUTION_VERSION,
            sorted(_FORM_WORDS),
            sorted(_UNIT_WORDS),
            sorted(_SALT_WORDS),
            [
                pattern.pattern
                for pattern in (
                    _DOSE_TOKEN,
                    _BRACKETED,
                    _TYLENOL_CODEINE,
                    _NUMBER_SIGN,
                    _INITIALISM,
                    _PERIOD,
                    _NOISE,
                    _DASHES,
                    _SEPARATORS,
                    _COMBINATION_WORDS,
                    _WITH,
                )
            ],
            list(_MARKS),
        ],
        ensure_ascii=False,
    ).encode("utf-8")
).hexdigest()[:16]


def _keep_word(word: str) -> str | None:
    """The word as the matching key keeps it, or None when it says nothing of the substance."""
    if word == "/":
        return word
    if word in _FORM_WORDS or word in _UNIT_WORDS or _DOSE_TOKEN.match(word):
        return None
    if "-" not in word:
        return word
    pieces = [piece for piece in word.split("-") if piece]
    if all(p in _FORM_WORDS or p in _UNIT_WORDS or _DOSE_TOKEN.match(p) for p in pieces):
        return None
    # "Toprol-XL" is "Toprol XL"; strengths and units stay, so "5-FU" and "Theo-24" keep theirs.
    kept = "-".join(piece for piece in pieces if piece not in _FORM_WORDS)
    return kept or None


def basic_normalise(name: str) -> str:
    """Lower-case the name; drop trademarks, notes, strengths, dosage forms and punctuation."""
    text = name.lower()
    for mark in _MARKS:
        text = text.replace(mark, " ")
    previous = None
    while previous != text:
        previous = text
        text = _BRACKETED.sub(" ", text)
    text = _TYLENOL_CODEINE.sub(" tylenol with codeine ", text)
    text = _NUMBER_SIGN.sub("#", text)
    text = _INITIALISM.sub(lambda found: found.group().replace(".", ""), text)
    text = _PERIOD.sub(" ", text)
    text = text.replace("'", "").replace("\u2019", "").replace("&", " and ")
    text = _WITH.sub(" with ", text)
    text = _DASHES.sub("-", _NOISE.sub(" ", text))
    # "+", "," and ";" separate the ingredients of a combination just as "/" does.
    for separator in ("+", ",", ";", "/"):
        text = text.replace(separator, " / ")
    kept = [word for word in map(_keep_word, (w.strip("-") for w in text.split())) if word]
    joined = _SEPARATORS.sub("/", " ".join(kept))
    return joined.strip("/ ")


def _without_salts(part: str) -> str:
    return " ".join(word for word in part.split() if word not in _SALT_WORDS)


def strip_salts(normalised: str, known: Collection[str]) -> str:
    """Drop salt words from each part of a normalised name when that reveals a known ingredient."""
    parts = []
    for part in normalised.split("/"):
        if part in known:
            parts.append(part)
            continue
        bare = _without_salts(part)
        parts.append(bare if bare and bare in known else part)
    return "/".join(parts)


def resolve_single(
    normalised: str, synonyms: Mapping[str, frozenset[str]], ingredients: Collection[str]
) -> frozenset[str] | None:
    """The ingredients one normalised name stands for, or None if it is no known drug.

    The name as written wins; without its salt words it may be an ingredient ("clopidogrel
    bisulfate") or a synonym ("valproate sodium").
    """
    for candidate in (normalised, _without_salts(normalised)):
        if not candidate:
            continue
        targets = synonyms.get(candidate)
        if targets is not None:
            return targets
        if candidate in ingredients:
            return frozenset((candidate,))
    return None


def _resolve_all(
    pieces: list[str], synonyms: Mapping[str, frozenset[str]], ingredients: Collection[str]
) -> frozenset[str] | None:
    """The union of the pieces' ingredients when every piece is a known drug, else None."""
    found: set[str] = set()
    for piece in pieces:
        targets = resolve_single(piece, synonyms, ingredients)
        if targets is None:
            return None
        found.update(targets)
    return frozenset(found)


def resolve_name(
    normalised: str, synonyms: Mapping[str, frozenset[str]], ingredients: Collection[str]
) -> frozenset[str]:
    """The ingredient keys of a normalised name; an unknown name (or part) stands for itself.

    A name resolves when it is, without its salt words, an ingredient or a synonym; or when it
    is a combination ("a/b", "a and b", "a-b", "a b") every part of which does.
    """
    if not normalised:
        return frozenset()
    direct = resolve_single(normalised, synonyms, ingredients)
    if direct is not None:
        return direct
    parts = [
        part.strip()
        for piece in normalised.split("/")
        for part in _COMBINATION_WORDS.split(piece)
        if part.strip()
    ]
    if len(parts) > 1:
        return frozenset(
            name
            for part in parts
            for name in (
                resolve_single(part, synonyms, ingredients)
                or _resolve_words(part, synonyms, ingredients)
                or {strip_salts(part, ingredients)}
            )
        )
    return _resolve_words(normalised, synonyms, ingredients) or frozenset(
        (strip_salts(normalised, ingredients),)
    )


def _resolve_words(
    part: str, synonyms: Mapping[str, frozenset[str]], ingredients: Collection[str]
) -> frozenset[str] | None:
    """A combination written without separators: split only when every piece is a known drug.

    EHRs write "sulfamethoxazole-trimethoprim" and "Diovan HCT", but brands use hyphens and
    spaces too ("Ery-Tab", "Klor-Con", "MS Contin"), which never split into known drugs.
    """
    for pieces in (part.split("-"), _without_salts(part).split()):
        pieces = [piece.strip() for piece in pieces if piece.strip()]
        if len(pieces) > 1:
            found = _resolve_all(pieces, synonyms, ingredients)
            if found is not None:
                return found
    return None


def is_resolved(ingredients: Collection[str], known: Collection[str]) -> bool:
    """Whether a drug's resolved ingredient keys are all known: some, and each an ingredient of
    the knowledge base. An unresolved name, or part of a combination, stands for itself and is
    not one (every synonym target is)."""
    return bool(ingredients) and all(ingredient in known for ingredient in ingredients)
