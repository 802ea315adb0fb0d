"""Drug-drug interaction knowledge base: matches medications to known interacting pairs."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol

from streams.contracts.vocabulary import Severity
from streams.domain.drug_names import NAME_RULES_DIGEST, resolve_name, resolve_single
from streams.domain.drug_names import basic_normalise as _basic_normalise
from streams.domain.drug_names import strip_salts as _strip_salts
from streams.domain.interaction_classes import merge_pairs, parse_catalog
from streams.domain.interaction_rows import (
    CodeTable,
    KnownInteraction,
    csv_rows,
    make_interaction,
    pair_key,
    required,
    rxcui,
)
from streams.domain.routes import route_of

__all__ = [
    "DrugRef",
    "InteractionKnowledgeBase",
    "InteractionMatch",
    "KnownInteraction",
    "Medication",
    "find_interactions",
    "find_resolved_interactions",
    "normalise_drug_name",
]

INTERACTION_COLUMNS: Final = (
    "rxnorm_a",
    "name_a",
    "rxnorm_b",
    "name_b",
    "severity",
    "description",
    "source",
)
SYNONYM_COLUMNS: Final = ("synonym", "ingredient_name", "rxnorm")
DDINTER_COLUMNS: Final = ("DDInterID_A", "Drug_A", "DDInterID_B", "Drug_B", "Level")
DDINTER_SOURCE: Final = "DDInter"

_DDINTER_LEVELS: Final[Mapping[str, Severity | None]] = MappingProxyType(
    {
        "major": Severity.MAJOR,
        "moderate": Severity.MODERATE,
        "minor": Severity.MINOR,
        "unknown": None,
    }
)


def normalise_drug_name(name: str, known_ingredients: Collection[str] | None = None) -> str:
    """Reduce a prescribed drug name to the form the knowledge base matches on.

    "Warfarin Sodium 5 mg Tablet" becomes "warfarin". Salt words are dropped only when what
    remains is a known ingredient: ``known_ingredients`` when given, else the ingredients of
    the knowledge base shipped with medstream.
    """
    known = (
        _default_knowledge_base().ingredient_names
        if known_ingredients is None
        else known_ingredients
    )
    return _strip_salts(_basic_normalise(name), known)


@dataclass(frozen=True, slots=True)
class DrugRef:
    """What the agent knows of one of a patient's medications."""

    medication_id: str
    name: str
    rxnorm_code: str | None = None
    # A route code or word as prescribed, or a vocabulary route; None: read from the name.
    route: str | None = None

    @property
    def drug(self) -> DrugRef:
        return self

    @property
    def route_given(self) -> str:
        """The vocabulary route this drug is given by (see ``streams.domain.routes``)."""
        return route_of(self.route, self.name)


class Medication(Protocol):
    """Anything that is one of a patient's medications and can say which (a ``DrugRef``)."""

    @property
    def medication_id(self) -> str: ...

    @property
    def drug(self) -> DrugRef: ...


@dataclass(frozen=True, slots=True)
class InteractionMatch:
    """Two of a patient's medications that interact; ``drug_a`` has the smaller medication_id."""

    drug_a: DrugRef
    drug_b: DrugRef
    interaction: KnownInteraction

    @property
    def medication_ids(self) -> tuple[str, str]:
        return (self.drug_a.medication_id, self.drug_b.medication_id)

    @property
    def severity(self) -> Severity:
        return self.interaction.severity


def _parse_interactions(
    text: str, origin: str, codes: CodeTable
) -> dict[tuple[str, str], KnownInteraction]:
    pairs: dict[tuple[str, str], KnownInteraction] = {}
    first_line: dict[tuple[str, str], int] = {}
    for line, row in csv_rows(text, origin, INTERACTION_COLUMNS):
        sides = []
        for suffix in ("a", "b"):
            display = required(row, f"name_{suffix}", origin, line)
            ingredient = _basic_normalise(display)
            if not ingredient:
                raise ValueError(f"{origin}:{line}: name_{suffix} {display!r} has no drug name")
            code = rxcui(row[f"rxnorm_{suffix}"], origin, line, f"rxnorm_{suffix}")
            codes.add(code, ingredient, origin, line)
            sides.append((ingredient, display, code))
        raw_severity = required(row, "severity", origin, line)
        try:
            severity = Severity(raw_severity.lower())
        except ValueError:
            allowed = "|".join(level.value for level in Severity)
            raise ValueError(
                f"{origin}:{line}: severity {raw_severity!r} is not one of {allowed}"
            ) from None
        description = required(row, "description", origin, line)
        source = required(row, "source", origin, line)
        if sides[0][0] == sides[1][0]:
            raise ValueError(f"{origin}:{line}: {sides[0][0]!r} is paired with itself")
        key = pair_key(sides[0][0], sides[1][0])
        if key in pairs:
            raise ValueError(
                f"{origin}:{line}: pair {key[0]} + {key[1]} already given on line {first_line[key]}"
            )
        pairs[key] = make_interaction(sides[0], sides[1], severity, description, source)
        first_line[key] = line
    return pairs


def _parse_synonyms(text: str, origin: str, codes: CodeTable) -> dict[str, frozenset[str]]:
    synonyms: dict[str, set[str]] = {}
    for line, row in csv_rows(text, origin, SYNONYM_COLUMNS):
        raw_synonym = required(row, "synonym", origin, line)
        synonym = _basic_normalise(raw_synonym)
        ingredient = _basic_normalise(required(row, "ingredient_name", origin, line))
        if not synonym or not ingredient:
            raise ValueError(f"{origin}:{line}: synonym or ingredient_name has no drug name")
        codes.add(rxcui(row["rxnorm"], origin, line, "rxnorm"), ingredient, origin, line)
        targets = synonyms.setdefault(synonym, set())
        if ingredient in targets:
            raise ValueError(f"{origin}:{line}: {raw_synonym!r} -> {ingredient!r} given twice")
        targets.add(ingredient)
    return {synonym: frozenset(targets) for synonym, targets in synonyms.items()}


class InteractionKnowledgeBase:
    """An immutable set of known interacting ingredient pairs plus the names that lead to them.

    Ingredient keys are normalised ingredient names ("warfarin", "potassium chloride"), so rows
    known by RxCUI and rows known only by name (DDInter, uncoded data) meet on the same key.
    """

    __slots__ = ("_by_code", "_fingerprint", "_ingredients", "_pairs", "_partners", "_synonyms")

    _pairs: Mapping[tuple[str, str], KnownInteraction]
    _synonyms: Mapping[str, frozenset[str]]
    _by_code: Mapping[str, str]
    _ingredients: frozenset[str]
    _partners: Mapping[str, frozenset[str]]
    _fingerprint: str

    def __init__(
        self,
        pairs: Mapping[tuple[str, str], KnownInteraction],
        synonyms: Mapping[str, frozenset[str]] | None = None,
        codes: Mapping[str, str] | None = None,
    ) -> None:
        synonyms = synonyms or {}
        ingredients = {name for pair in pairs for name in pair}
        ingredients.update(name for targets in synonyms.values() for name in targets)
        ingredients.update((codes or {}).values())
        object.__setattr__(self, "_pairs", MappingProxyType(dict(pairs)))
        object.__setattr__(self, "_synonyms", MappingProxyType(dict(synonyms)))
        object.__setattr__(self, "_by_code", MappingProxyType(dict(codes or {})))
        object.__setattr__(self, "_ingredients", frozenset(ingredients))
        partners: dict[str, set[str]] = {}
        for a, b in pairs:
            partners.setdefault(a, set()).add(b)
            partners.setdefault(b, set()).add(a)
        object.__setattr__(
            self,
            "_partners",
            MappingProxyType({name: frozenset(others) for name, others in partners.items()}),
        )
        # Only what resolving a drug reads: pairs matter to ingredients_of only as ingredients;
        # the name rules (word lists, patterns) change what a name normalises to.
        basis = json.dumps(
            [
                NAME_RULES_DIGEST,
                sorted(self._ingredients),
                sorted((name, sorted(targets)) for name, targets in self._synonyms.items()),
                sorted(self._by_code.items()),
            ],
            ensure_ascii=False,
        )
        object.__setattr__(
            self, "_fingerprint", hashlib.sha256(basis.encode("utf-8")).hexdigest()[:16]
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    @classmethod
    def load_default(cls) -> InteractionKnowledgeBase:
        """The knowledge base shipped in ``streams/domain/data`` (built once, then shared)."""
        return _default_knowledge_base()

    @classmethod
    def from_texts(
        cls,
        interactions_csv: str,
        synonyms_csv: str | None = None,
        *,
        interactions_origin: str = "interactions.csv",
        synonyms_origin: str = "drug_synonyms.csv",
        classes_csv: str | None = None,
        rules_csv: str | None = None,
        classes_origin: str = "drug_classes.csv",
        rules_origin: str = "class_rules.csv",
    ) -> InteractionKnowledgeBase:
        """Build from CSV text; the origins name the sources in error messages.

        With ``classes_csv`` and ``rules_csv`` the class rules are expanded into ingredient
        pairs beside the listed ones (see ``streams.domain.interaction_classes``).
        """
        codes = CodeTable()
        pairs = _parse_interactions(interactions_csv, interactions_origin, codes)
        synonyms = (
            _parse_synonyms(synonyms_csv, synonyms_origin, codes)
            if synonyms_csv is not None
            else {}
        )
        if classes_csv is not None and rules_csv is not None:
            catalog = parse_catalog(
                classes_csv,
                rules_csv,
                codes,
                classes_origin=classes_origin,
                rules_origin=rules_origin,
            )
            pairs = merge_pairs(pairs, catalog.expand())
        return cls(pairs, synonyms, codes.by_code)

    @classmethod
    def from_files(
        cls,
        interactions_csv: Path,
        synonyms_csv: Path | None = None,
        *,
        classes_csv: Path | None = None,
        rules_csv: Path | None = None,
    ) -> InteractionKnowledgeBase:
        """Build from an interactions CSV and, optionally, synonyms, classes and class rules."""
        return cls.from_texts(
            interactions_csv.read_text(encoding="utf-8-sig"),
            synonyms_csv.read_text(encoding="utf-8-sig") if synonyms_csv is not None else None,
            interactions_origin=str(interactions_csv),
            synonyms_origin=str(synonyms_csv),
            classes_csv=classes_csv.read_text(encoding="utf-8-sig") if classes_csv else None,
            rules_csv=rules_csv.read_text(encoding="utf-8-sig") if rules_csv else None,
            classes_origin=str(classes_csv),
            rules_origin=str(rules_csv),
        )

    def with_ddinter_csv(self, path: Path) -> InteractionKnowledgeBase:
        """A new knowledge base extended with a CSV in DDInter's download format.

        Rows of level Unknown are skipped. DDInter ids are not RxNorm codes, so its rows are
        keyed by drug name (through the synonym table). A pair this base already has keeps its
        description and takes DDInter's severity only when that is more severe.
        """
        origin = str(path)
        found: dict[tuple[str, str], KnownInteraction] = {}
        for line, row in csv_rows(path.read_text(encoding="utf-8-sig"), origin, DDINTER_COLUMNS):
            raw_level = required(row, "Level", origin, line)
            if raw_level.lower() not in _DDINTER_LEVELS:
                allowed = "|".join(level.title() for level in _DDINTER_LEVELS)
                raise ValueError(f"{origin}:{line}: Level {raw_level!r} is not one of {allowed}")
            severity = _DDINTER_LEVELS[raw_level.lower()]
            if severity is None:
                continue
            names = (
                required(row, "Drug_A", origin, line),
                required(row, "Drug_B", origin, line),
            )
            resolved = [self._resolve_name(_basic_normalise(name)) for name in names]
            if not resolved[0] or not resolved[1]:
                raise ValueError(f"{origin}:{line}: Drug_A or Drug_B has no drug name")
            if resolved[0] == resolved[1]:
                raise ValueError(
                    f"{origin}:{line}: {names[0]!r} and {names[1]!r} are the same drug"
                )
            for ingredient_a in sorted(resolved[0]):
                for ingredient_b in sorted(resolved[1]):
                    if ingredient_a == ingredient_b:
                        continue
                    key = pair_key(ingredient_a, ingredient_b)
                    previous = found.get(key)
                    if previous is not None and previous.severity.rank <= severity.rank:
                        continue
                    found[key] = make_interaction(
                        (ingredient_a, names[0], None),
                        (ingredient_b, names[1], None),
                        severity,
                        f"DDInter lists this pair as a {severity.value} interaction.",
                        DDINTER_SOURCE,
                    )
        merged = dict(self._pairs)
        for key, extra in found.items():
            base = merged.get(key)
            if base is None:
                merged[key] = extra
            elif extra.severity.rank < base.severity.rank:
                merged[key] = replace(
                    base, severity=extra.severity, source=f"{base.source}; {DDINTER_SOURCE}"
                )
        return InteractionKnowledgeBase(merged, self._synonyms, self._by_code)

    @property
    def ingredient_names(self) -> frozenset[str]:
        """Every ingredient key the base knows, whether or not it is part of a pair."""
        return self._ingredients

    @property
    def fingerprint(self) -> str:
        """Names what ``ingredients_of`` answers: two bases with the same fingerprint resolve
        every drug to the same ingredients, so ingredients stored with one hold for the other."""
        return self._fingerprint

    @property
    def interactions(self) -> tuple[KnownInteraction, ...]:
        """All known pairs, sorted by ingredient keys."""
        return tuple(self._pairs[key] for key in sorted(self._pairs))

    def rxnorm_ingredient(self, code: str) -> str | None:
        """The ingredient key an RxNorm ingredient RxCUI stands for, if the base knows it."""
        return self._by_code.get(code.strip())

    def synonym_targets(self, name: str) -> frozenset[str]:
        """The ingredients a brand or salt name stands for; empty if it is not a known synonym."""
        return self._synonyms.get(_basic_normalise(name), frozenset())

    def normalise(self, name: str) -> str:
        """``normalise_drug_name`` against this base's ingredients."""
        return _strip_salts(_basic_normalise(name), self._ingredients)

    def ingredients_of(self, drug: DrugRef) -> frozenset[str]:
        """Ingredient keys of a medication: a combination product yields several.

        A known RxCUI wins; otherwise the name goes through the synonym table, and an unknown
        name stands for itself (normalised), which simply matches nothing.
        """
        if drug.rxnorm_code is not None:
            ingredient = self._by_code.get(drug.rxnorm_code.strip())
            if ingredient is not None:
                return frozenset((ingredient,))
        return self._resolve_name(_basic_normalise(drug.name))

    def interaction_between(self, a: DrugRef, b: DrugRef) -> KnownInteraction | None:
        """The most severe known interaction across the two medications' ingredient pairs
        that applies to the routes they are given by."""
        return self.interaction_across(
            self.ingredients_of(a),
            self.ingredients_of(b),
            routes=(a.route_given, b.route_given),
        )

    def interaction_across(
        self,
        ingredients_a: Iterable[str],
        ingredients_b: Collection[str],
        *,
        routes: tuple[str, str] | None = None,
    ) -> KnownInteraction | None:
        """The most severe known interaction between two sets of ingredient keys (resolved
        medications: ``ingredients_of`` of each); given the two drugs' vocabulary routes,
        only one that applies to them."""
        best: KnownInteraction | None = None
        for ingredient_a in ingredients_a:
            for ingredient_b in ingredients_b:
                if ingredient_a == ingredient_b:
                    continue
                key = pair_key(ingredient_a, ingredient_b)
                candidate = self._pairs.get(key)
                if candidate is None:
                    continue
                if routes is not None and not candidate.applies_to(*routes):
                    continue
                # Ties go to the alphabetically first pair so the answer never depends on set order.
                if best is None or (candidate.severity.rank, key) < (
                    best.severity.rank,
                    (best.ingredient_a, best.ingredient_b),
                ):
                    best = candidate
        return best

    def interaction_of(self, ingredient_a: str, ingredient_b: str) -> KnownInteraction | None:
        """The known interaction of two ingredient keys, in either order."""
        return self._pairs.get(pair_key(ingredient_a, ingredient_b))

    def partners_of(self, ingredients: Iterable[str]) -> frozenset[str]:
        """Every ingredient key that some known pair joins to one of ``ingredients``."""
        found: set[str] = set()
        for ingredient in ingredients:
            found.update(self._partners.get(ingredient, ()))
        return frozenset(found)

    def _resolve_name(self, normalised: str) -> frozenset[str]:
        return resolve_name(normalised, self._synonyms, self._ingredients)

    def _resolve_single(self, normalised: str) -> frozenset[str] | None:
        return resolve_single(normalised, self._synonyms, self._ingredients)

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[KnownInteraction]:
        return iter(self.interactions)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(pairs={len(self._pairs)},"
            f" ingredients={len(self._ingredients)}, synonyms={len(self._synonyms)})"
        )


def _drug_order(drug: DrugRef) -> tuple[str, str, str]:
    return (drug.medication_id, drug.name, drug.rxnorm_code or "")


def find_interactions(
    kb: InteractionKnowledgeBase, new_drug: DrugRef, active: Iterable[DrugRef]
) -> list[InteractionMatch]:
    """Known interactions of a newly prescribed drug with each active medication.

    The new drug's own medication_id is skipped (a re-prescription is not an interaction), and
    so is a repeated medication_id. Most severe first, then by medication ids.
    """
    return find_resolved_interactions(
        kb,
        new_drug,
        kb.ingredients_of(new_drug),
        ((other, kb.ingredients_of(other)) for other in active),
    )


def find_resolved_interactions(
    kb: InteractionKnowledgeBase,
    new_drug: DrugRef,
    new_ingredients: Collection[str],
    active: Iterable[tuple[Medication, Collection[str]]],
) -> list[InteractionMatch]:
    """``find_interactions`` for drugs already resolved: each with its ``ingredients_of``.

    Nothing is normalised here, so checking a drug against N active ones costs N set tests
    (and a pair lookup for the few that can interact), however long their names; a
    ``DrugRef`` is asked for only of the medications that interact.
    """
    matches: list[InteractionMatch] = []
    seen = {new_drug.medication_id}
    partners = kb.partners_of(new_ingredients)
    new_route = new_drug.route_given
    for other, ingredients in active:
        if other.medication_id in seen:
            continue
        seen.add(other.medication_id)
        if partners.isdisjoint(ingredients):
            continue
        other_drug = other.drug
        interaction = kb.interaction_across(
            new_ingredients, ingredients, routes=(new_route, other_drug.route_given)
        )
        if interaction is None:
            continue
        first, second = sorted((new_drug, other_drug), key=_drug_order)
        matches.append(InteractionMatch(drug_a=first, drug_b=second, interaction=interaction))
    matches.sort(key=lambda match: (match.severity.rank, *match.medication_ids))
    return matches


@functools.cache
def _default_knowledge_base() -> InteractionKnowledgeBase:
    data = files("streams.domain") / "data"
    interactions = data / "interactions.csv"
    synonyms = data / "drug_synonyms.csv"
    return InteractionKnowledgeBase.from_texts(
        interactions.read_text(encoding="utf-8-sig"),
        synonyms.read_text(encoding="utf-8-sig"),
        interactions_origin="streams/domain/data/interactions.csv",
        synonyms_origin="streams/domain/data/drug_synonyms.csv",
        classes_csv=(data / "drug_classes.csv").read_text(encoding="utf-8-sig"),
        rules_csv=(data / "class_rules.csv").read_text(encoding="utf-8-sig"),
        classes_origin="streams/domain/data/drug_classes.csv",
        rules_origin="streams/domain/data/class_rules.csv",
    )
