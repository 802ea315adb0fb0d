"""Routes of administration: a route code, word or drug name mapped to a small vocabulary."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "ALL_ROUTES",
    "DEFAULT_ROUTE",
    "LOCAL_ROUTES",
    "SYSTEMIC_ROUTES",
    "parse_route",
    "parse_routes",
    "route_from_name",
    "route_of",
]

# Skin, eye and ear: the drug acts where it is put and too little reaches the blood for the
# usual (systemic) interactions. Nasal, inhaled, rectal and vaginal products are absorbed
# enough that labels describe systemic interactions for them (intranasal fentanyl and
# sumatriptan, inhaled fluticasone with ritonavir, vaginal miconazole with warfarin), so they
# count as systemic: a warning too many is the safer mistake.
LOCAL_ROUTES: Final = frozenset({"topical", "ophthalmic", "otic"})
SYSTEMIC_ROUTES: Final = frozenset(
    {
        "oral",
        "sublingual",
        "buccal",
        "intravenous",
        "intramuscular",
        "subcutaneous",
        "transdermal",
        "rectal",
        "vaginal",
        "nasal",
        "inhaled",
    }
)
ALL_ROUTES: Final = LOCAL_ROUTES | SYSTEMIC_ROUTES
# Nothing said and nothing in the name: most prescriptions are oral, and oral is systemic, so
# an unknown route never silences a warning.
DEFAULT_ROUTE: Final = "oral"

# SNOMED CT route concepts (the FHIR R4 example binding of Dosage.route) and the words,
# abbreviations and HL7 v3 RouteOfAdministration codes prescriptions use.
_ROUTE_TERMS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "26643006": "oral",
        "oral": "oral",
        "po": "oral",
        "by mouth": "oral",
        "mouth": "oral",
        "enteral": "oral",
        "37839007": "sublingual",
        "sublingual": "sublingual",
        "sl": "sublingual",
        "54471007": "buccal",
        "buccal": "buccal",
        "47625008": "intravenous",
        "intravenous": "intravenous",
        "iv": "intravenous",
        "ivpb": "intravenous",
        "78421000": "intramuscular",
        "intramuscular": "intramuscular",
        "im": "intramuscular",
        "34206005": "subcutaneous",
        "subcutaneous": "subcutaneous",
        "sc": "subcutaneous",
        "sq": "subcutaneous",
        "subcut": "subcutaneous",
        "45890007": "transdermal",
        "transdermal": "transdermal",
        "td": "transdermal",
        "37161004": "rectal",
        "rectal": "rectal",
        "pr": "rectal",
        "16857009": "vaginal",
        "vaginal": "vaginal",
        "pv": "vaginal",
        "46713006": "nasal",
        "nasal": "nasal",
        "intranasal": "nasal",
        "447694001": "inhaled",
        "inhaled": "inhaled",
        "inhalation": "inhaled",
        "respiratory": "inhaled",
        "respiratory tract": "inhaled",
        "inh": "inhaled",
        "6064005": "topical",
        "topical": "topical",
        "cutaneous": "topical",
        "dermal": "topical",
        "skin": "topical",
        "external": "topical",
        "top": "topical",
        "54485002": "ophthalmic",
        "ophthalmic": "ophthalmic",
        "ocular": "ophthalmic",
        "eye": "ophthalmic",
        "opth": "ophthalmic",
        "10547007": "otic",
        "otic": "otic",
        "auricular": "otic",
        "ear": "otic",
    }
)

# Words of a drug name that give its route away; phrases are matched before single words.
_NAME_PHRASES: Final[tuple[tuple[str, str], ...]] = (
    ("eye drops", "ophthalmic"),
    ("eye drop", "ophthalmic"),
    ("ear drops", "otic"),
    ("ear drop", "otic"),
    ("nasal spray", "nasal"),
    ("by mouth", "oral"),
)
# Words that name a route outright; they beat the form words below ("ophthalmic
# suspension", "miconazole oral gel", "rectal cream").
_ROUTE_WORDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "oral": "oral",
        "buccal": "buccal",
        "sublingual": "sublingual",
        "intravenous": "intravenous",
        "iv": "intravenous",
        "intramuscular": "intramuscular",
        "im": "intramuscular",
        "subcutaneous": "subcutaneous",
        "transdermal": "transdermal",
        "rectal": "rectal",
        "vaginal": "vaginal",
        "nasal": "nasal",
        "intranasal": "nasal",
        "inhalation": "inhaled",
        "inhaled": "inhaled",
        "topical": "topical",
        "cutaneous": "topical",
        "ophthalmic": "ophthalmic",
        "eye": "ophthalmic",
        "otic": "otic",
        "ear": "otic",
    }
)
# Dosage forms that imply a route.
_FORM_ROUTES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "tablet": "oral",
        "tablets": "oral",
        "tab": "oral",
        "capsule": "oral",
        "capsules": "oral",
        "cap": "oral",
        "syrup": "oral",
        "elixir": "oral",
        "chewable": "oral",
        "lozenge": "oral",
        "troche": "buccal",
        "injection": "intravenous",
        "injectable": "intravenous",
        "infusion": "intravenous",
        # A patch delivers through the skin into the blood (fentanyl, clonidine, rivastigmine).
        "patch": "transdermal",
        "patches": "transdermal",
        "suppository": "rectal",
        "suppositories": "rectal",
        "enema": "rectal",
        "pessary": "vaginal",
        "inhaler": "inhaled",
        "nebulizer": "inhaled",
        "nebuliser": "inhaled",
        "cream": "topical",
        "ointment": "topical",
        "gel": "topical",
        "lotion": "topical",
        "shampoo": "topical",
        "foam": "topical",
        "liniment": "topical",
        "paint": "topical",
    }
)
_WORD: Final = re.compile(r"[a-z]+")


def parse_route(value: str | None) -> str | None:
    """The vocabulary route of a route code or word ("26643006", "PO", "topical"); None when
    it is missing or unknown."""
    if value is None:
        return None
    text = " ".join(value.lower().replace("_", " ").replace("-", " ").split())
    if text.endswith(" route"):
        text = text[: -len(" route")]
    return _ROUTE_TERMS.get(text)


def route_from_name(name: str) -> str | None:
    """The route a drug name gives away ("Nizoral 2% shampoo": topical), if any.

    A word naming a route beats a dosage form ("ophthalmic suspension"); among words of the
    same kind a systemic route wins, so a name mixing both is never treated as local.
    """
    padded = f" {' '.join(_WORD.findall(name.lower()))} "
    named: list[str] = []
    for phrase, route in _NAME_PHRASES:
        if f" {phrase} " in padded:
            named.append(route)
            padded = padded.replace(f" {phrase} ", " ")
    words = padded.split()
    named.extend(_ROUTE_WORDS[word] for word in words if word in _ROUTE_WORDS)
    for found in (named, [_FORM_ROUTES[word] for word in words if word in _FORM_ROUTES]):
        if found:
            systemic = [route for route in found if route in SYSTEMIC_ROUTES]
            return systemic[0] if systemic else found[0]
    return None


def route_of(route: str | None, name: str) -> str:
    """The route a prescription is given by: its route when known, else its name's form,
    else oral."""
    return parse_route(route) or route_from_name(name) or DEFAULT_ROUTE


def parse_routes(value: str) -> frozenset[str]:
    """A rule's routes: "systemic" (also when empty), "local", "all", or route words joined
    by ";"; raises ValueError on an unknown word."""
    routes: set[str] = set()
    for word in (part.strip().lower() for part in (value or "systemic").split(";")):
        if word == "systemic":
            routes |= SYSTEMIC_ROUTES
        elif word == "local":
            routes |= LOCAL_ROUTES
        elif word == "all":
            routes |= ALL_ROUTES
        elif word in ALL_ROUTES:
            routes.add(word)
        else:
            raise ValueError(
                f"route {word!r} is not one of systemic|local|all|{'|'.join(sorted(ALL_ROUTES))}"
            )
    return frozenset(routes)
