"""The class layer of the interaction knowledge base: drug classes and the rules that pair them."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from types import MappingProxyType
from typing import Final

from streams.contracts.vocabulary import Severity
from streams.domain.drug_names import basic_normalise
from streams.domain.interaction_rows import (
    CodeTable,
    KnownInteraction,
    csv_rows,
    make_interaction,
    pair_key,
    required,
    rxcui,
)
from streams.domain.routes import parse_routes

__all__ = [
    "CLASS_COLUMNS",
    "RULE_COLUMNS",
    "ClassCatalog",
    "ClassMember",
    "ClassRule",
    "DrugClass",
    "default_catalog",
    "merge_pairs",
    "parse_catalog",
]

CLASS_COLUMNS: Final = ("class_id", "class_name", "ingredient", "rxnorm", "source")
RULE_COLUMNS: Final = (
    "rule_id",
    "left",
    "right",
    "severity",
    "routes",
    "onc",
    "description",
    "source",
)
CLASS_PREFIX: Final = "class:"

# How specific a rule is: the number of its sides that are classes. A listed ingredient pair
# (interactions.csv) is 0, like a rule naming two ingredients.
PAIR_SPECIFICITY: Final = 0


@dataclass(frozen=True, slots=True)
class ClassMember:
    """One ingredient of a class; ``rxnorm`` is None where no RxCUI could be confirmed."""

    ingredient: str
    rxnorm: str | None


@dataclass(frozen=True, slots=True)
class DrugClass:
    """A named class of ingredients and where its membership comes from."""

    class_id: str
    name: str
    source: str
    members: tuple[ClassMember, ...]

    @property
    def ingredients(self) -> tuple[str, ...]:
        return tuple(member.ingredient for member in self.members)


@dataclass(frozen=True, slots=True)
class ClassRule:
    """Two sides (each a class id or an ingredient key) that interact, on the given routes."""

    rule_id: str
    left: str
    left_is_class: bool
    right: str
    right_is_class: bool
    severity: Severity
    routes: frozenset[str]
    onc: int | None
    description: str
    source: str

    @property
    def specificity(self) -> int:
        """0 for two ingredients, 1 for an ingredient and a class, 2 for two classes."""
        return int(self.left_is_class) + int(self.right_is_class)

    @property
    def sides(self) -> tuple[tuple[str, bool], tuple[str, bool]]:
        return ((self.left, self.left_is_class), (self.right, self.right_is_class))


@dataclass(frozen=True, slots=True)
class ClassCatalog:
    """Every class and rule, as read; ``expand`` turns the rules into ingredient pairs."""

    classes: Mapping[str, DrugClass]
    rules: tuple[ClassRule, ...]
    codes: Mapping[str, str]

    def ingredients_of_side(self, side: str, is_class: bool) -> tuple[str, ...]:
        return self.classes[side].ingredients if is_class else (side,)

    def pairs_of(self, rule: ClassRule) -> Iterator[tuple[str, str]]:
        """The distinct ingredient pairs a rule stands for, each once, in canonical order."""
        left = self.ingredients_of_side(rule.left, rule.left_is_class)
        right = self.ingredients_of_side(rule.right, rule.right_is_class)
        seen: set[tuple[str, str]] = set()
        for a in left:
            for b in right:
                if a == b:
                    continue
                key = pair_key(a, b)
                if key not in seen:
                    seen.add(key)
                    yield key

    def expand(self) -> dict[tuple[str, str], KnownInteraction]:
        """Each ingredient pair with the rule that wins it: the most specific, then the most
        severe, then the first in the file."""
        found: dict[tuple[str, str], KnownInteraction] = {}
        for rule in self.rules:
            for a, b in self.pairs_of(rule):
                candidate = make_interaction(
                    (a, a, self.codes.get(a)),
                    (b, b, self.codes.get(b)),
                    rule.severity,
                    rule.description,
                    rule.source,
                    routes=rule.routes,
                    rule=rule.rule_id,
                    specificity=rule.specificity,
                )
                previous = found.get((a, b))
                if previous is None or _precedence(candidate) < _precedence(previous):
                    found[(a, b)] = candidate
        return found


def _precedence(interaction: KnownInteraction) -> tuple[int, int]:
    return (interaction.specificity, interaction.severity.rank)


def merge_pairs(
    listed: Mapping[tuple[str, str], KnownInteraction],
    expanded: Mapping[tuple[str, str], KnownInteraction],
) -> dict[tuple[str, str], KnownInteraction]:
    """Listed pairs and expanded rules side by side; where both give a pair, the more specific
    wins, then the more severe, and a listed pair wins a tie."""
    merged = dict(listed)
    for key, candidate in expanded.items():
        previous = merged.get(key)
        if previous is None or _precedence(candidate) < _precedence(previous):
            merged[key] = candidate
    return merged


def _severity(raw: str, origin: str, line: int) -> Severity:
    try:
        return Severity(raw.lower())
    except ValueError:
        allowed = "|".join(level.value for level in Severity)
        raise ValueError(f"{origin}:{line}: severity {raw!r} is not one of {allowed}") from None


def _parse_classes(text: str, origin: str, codes: CodeTable) -> dict[str, DrugClass]:
    names: dict[str, tuple[str, str]] = {}
    members: dict[str, list[ClassMember]] = {}
    for line, row in csv_rows(text, origin, CLASS_COLUMNS):
        class_id = required(row, "class_id", origin, line)
        name = required(row, "class_name", origin, line)
        source = required(row, "source", origin, line)
        if class_id in names and names[class_id] != (name, source):
            raise ValueError(
                f"{origin}:{line}: class {class_id!r} named or sourced differently from before"
            )
        names[class_id] = (name, source)
        display = required(row, "ingredient", origin, line)
        ingredient = basic_normalise(display)
        if not ingredient:
            raise ValueError(f"{origin}:{line}: ingredient {display!r} has no drug name")
        code = rxcui(row["rxnorm"], origin, line, "rxnorm")
        codes.add(code, ingredient, origin, line)
        listed = members.setdefault(class_id, [])
        if any(member.ingredient == ingredient for member in listed):
            raise ValueError(f"{origin}:{line}: {ingredient!r} is already in class {class_id!r}")
        listed.append(ClassMember(ingredient, code))
    return {
        class_id: DrugClass(class_id, name, source, tuple(members[class_id]))
        for class_id, (name, source) in names.items()
    }


def _side(
    value: str, classes: Mapping[str, DrugClass], origin: str, line: int, column: str
) -> tuple[str, bool]:
    if value.startswith(CLASS_PREFIX):
        class_id = value[len(CLASS_PREFIX) :].strip()
        if class_id not in classes:
            raise ValueError(f"{origin}:{line}: {column} names unknown class {class_id!r}")
        return class_id, True
    ingredient = basic_normalise(value)
    if not ingredient:
        raise ValueError(f"{origin}:{line}: {column} {value!r} has no drug name")
    return ingredient, False


def _parse_rules(text: str, origin: str, classes: Mapping[str, DrugClass]) -> list[ClassRule]:
    rules: list[ClassRule] = []
    seen: set[str] = set()
    for line, row in csv_rows(text, origin, RULE_COLUMNS):
        rule_id = required(row, "rule_id", origin, line)
        if rule_id in seen:
            raise ValueError(f"{origin}:{line}: rule {rule_id!r} given twice")
        seen.add(rule_id)
        left = _side(required(row, "left", origin, line), classes, origin, line, "left")
        right = _side(required(row, "right", origin, line), classes, origin, line, "right")
        if left == right and not left[1]:
            raise ValueError(f"{origin}:{line}: {left[0]!r} is paired with itself")
        try:
            routes = parse_routes(row["routes"])
        except ValueError as error:
            raise ValueError(f"{origin}:{line}: {error}") from None
        onc_text = row["onc"]
        if onc_text and not onc_text.isdigit():
            raise ValueError(f"{origin}:{line}: onc {onc_text!r} is not a number")
        rules.append(
            ClassRule(
                rule_id=rule_id,
                left=left[0],
                left_is_class=left[1],
                right=right[0],
                right_is_class=right[1],
                severity=_severity(required(row, "severity", origin, line), origin, line),
                routes=routes,
                onc=int(onc_text) if onc_text else None,
                description=required(row, "description", origin, line),
                source=required(row, "source", origin, line),
            )
        )
    return rules


def parse_catalog(
    classes_csv: str,
    rules_csv: str,
    codes: CodeTable,
    *,
    classes_origin: str = "drug_classes.csv",
    rules_origin: str = "class_rules.csv",
) -> ClassCatalog:
    """Read the classes and rules; RxCUIs join ``codes``, which keeps them one-to-one with the
    other data files."""
    classes = _parse_classes(classes_csv, classes_origin, codes)
    rules = _parse_rules(rules_csv, rules_origin, classes)
    return ClassCatalog(
        classes=MappingProxyType(classes),
        rules=tuple(rules),
        codes=MappingProxyType(dict(codes.by_ingredient)),
    )


@functools.cache
def default_catalog() -> ClassCatalog:
    """The classes and rules shipped in ``streams/domain/data`` (built once, then shared)."""
    data = files("streams.domain") / "data"
    return parse_catalog(
        (data / "drug_classes.csv").read_text(encoding="utf-8-sig"),
        (data / "class_rules.csv").read_text(encoding="utf-8-sig"),
        CodeTable(),
        classes_origin="streams/domain/data/drug_classes.csv",
        rules_origin="streams/domain/data/class_rules.csv",
    )
