"""Drug name resolution: a prescribed name reduced to the knowledge base's ingredient keys."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Final

__all__ = ["basic_normalise", "resolve_name", "resolve_single", "strip_salts"]

# Words that describe the product rather than the substance; prescriptions spell the same
# ingredient with any of them, so they must not change the key an ingredient matches on.
# fmt: off
_FORM_WORDS: Final = frozenset({
    "tablet", "tablets", "tab", "tabs", "caplet", "caplets", "capsule", "capsules", "cap",
    "caps", "softgel", "softgels", "oral", "solution", "suspension", "syrup", "elixir",
    "liquid", "drops", "drop", "injection", "injectable", "inj", "intravenous", "iv", "im",
    "subcutaneous", "sc", "sq", "po", "topical", "transdermal", "patch", "patches", "cream",
    "ointment", "gel", "lotion", "ophthalmic", "otic", "nasal", "spray", "inhaler",
    "inhalation", "aerosol", "powder", "granules", "suppository", "rectal", "vaginal",
    "sublingual", "buccal", "chewable", "dispersible", "disintegrating", "odt",
    "effervescent", "film", "coated", "film-coated", "enteric", "enteric-coated", "ec",
    "delayed", "extended", "sustained", "controlled", "modified", "immediate", "release",
    "er", "xr", "sr", "cr", "dr", "xl", "la", "ir", "ds", "vial", "vials", "ampule",
    "ampoule", "syringe", "prefilled", "pen", "kit", "pack", "blister", "dose", "doses",
    "pump", "usp", "low", "low-dose", "strength", "double", "mg", "mcg", "µg", "ug", "g",
    "gm", "kg", "ml", "l", "meq", "mmol", "unit", "units", "iu", "hr", "hrs", "hour",
    "hours", "h", "%", "per",
})
# fmt: on

# Salt and ester moieties; dropped only when the rest is a known ingredient, so that
# "potassium chloride" or "magnesium sulfate" keep their identity.
# fmt: off
_SALT_WORDS: Final = frozenset({
    "sodium", "disodium", "monosodium", "potassium", "calcium", "magnesium",
    "hydrochloride", "hcl", "dihydrochloride", "hydrobromide", "hbr", "succinate",
    "tartrate", "bitartrate", "sulfate", "sulphate", "maleate", "besylate", "besilate",
    "mesylate", "mesilate", "dimesylate", "citrate", "fumarate", "acetate", "phosphate",
    "bromide", "chloride", "carbonate", "bicarbonate", "lactate", "gluconate", "nitrate",
    "hyclate", "hydrate", "monohydrate", "dihydrate", "trihydrate", "anhydrous",
    "tromethamine", "propionate", "dipropionate", "valerate", "oxalate", "napsylate",
    "pamoate", "stearate", "base",
})
# fmt: on

# A strength ("5", "2.5mg", "800-160", "0.4mg/hr") or a unit glued to the next strength
# ("mg-160" in "800 mg-160 mg"); "5-fluorouracil" is neither and stays.
_DOSE_TOKEN: Final = re.compile(
    r"^(?:\d[\d.,]*|\.\d+)(?:-\d[\d.,]*)*(?:[a-zµ%/][\w%/.µ-]*)?$"
    r"|^(?:mg|mcg|µg|g|ml|meq|units?|iu)-\d[\w%/.µ-]*$"
)
_BRACKETED: Final = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_SEPARATORS: Final = re.compile(r"\s*(?:/\s*)+")
_COMBINATION_WORDS: Final = re.compile(r"\s+(?:and|with)\s+")


def basic_normalise(name: str) -> str:
    """Lower-case the name and drop trademarks, bracketed notes, strengths and dosage forms."""
    text = name.lower()
    for mark in ("®", "™", "©", "(r)", "(tm)"):
        text = text.replace(mark, " ")
    previous = None
    while previous != text:
        previous = text
        text = _BRACKETED.sub(" ", text)
    # "+", "," and ";" separate the ingredients of a combination just as "/" does.
    for separator in ("+", ",", ";", "/"):
        text = text.replace(separator, " / ")
    kept = [
        word
        for word in text.split()
        if word == "/" or (word not in _FORM_WORDS and not _DOSE_TOKEN.match(word))
    ]
    joined = _SEPARATORS.sub("/", " ".join(kept))
    return joined.strip("/ ")


def strip_salts(normalised: str, known: Collection[str]) -> str:
    """Drop salt words from each part of a normalised name when that reveals a known ingredient."""
    parts = []
    for part in normalised.split("/"):
        if part in known:
            parts.append(part)
            continue
        bare = " ".join(word for word in part.split() if word not in _SALT_WORDS)
        parts.append(bare if bare and bare in known else part)
    return "/".join(parts)


def resolve_single(
    normalised: str, synonyms: Mapping[str, frozenset[str]], ingredients: Collection[str]
) -> frozenset[str] | None:
    """The ingredients one normalised name stands for, or None if it is no known drug."""
    for candidate in (normalised, strip_salts(normalised, ingredients)):
        targets = synonyms.get(candidate)
        if targets is not None:
            return targets
        if candidate in ingredients:
            return frozenset((candidate,))
    return None


def resolve_name(
    normalised: str, synonyms: Mapping[str, frozenset[str]], ingredients: Collection[str]
) -> frozenset[str]:
    """The ingredient keys of a normalised name; an unknown name stands for itself."""
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
                resolve_single(part, synonyms, ingredients) or {strip_salts(part, ingredients)}
            )
        )
    # EHRs often write combinations with a hyphen ("sulfamethoxazole-trimethoprim"), but
    # brands use hyphens too ("Ery-Tab"), so split only when every piece is a known drug.
    pieces = [piece.strip() for piece in normalised.split("-")]
    if len(pieces) > 1:
        resolved = [resolve_single(piece, synonyms, ingredients) for piece in pieces if piece]
        if resolved and all(targets is not None for targets in resolved):
            return frozenset(name for targets in resolved if targets for name in targets)
    return frozenset((strip_salts(normalised, ingredients),))
