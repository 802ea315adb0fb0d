"""The interaction tables' shared rows: the pair record, CSV reading and RxCUI bookkeeping."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from streams.contracts.vocabulary import Severity
from streams.domain.routes import SYSTEMIC_ROUTES

__all__ = [
    "CodeTable",
    "KnownInteraction",
    "csv_rows",
    "make_interaction",
    "pair_key",
    "required",
    "rxcui",
]

_RXCUI: Final = re.compile(r"^\d{1,10}$")


@dataclass(frozen=True, slots=True)
class KnownInteraction:
    """One interacting pair of ingredients; ``ingredient_a`` sorts before ``ingredient_b``."""

    ingredient_a: str
    ingredient_b: str
    name_a: str
    name_b: str
    severity: Severity
    description: str
    source: str
    rxnorm_a: str | None = None
    rxnorm_b: str | None = None
    # The routes both drugs must be given by for the interaction to apply.
    routes: frozenset[str] = SYSTEMIC_ROUTES
    # The class rule that produced it ("" for a listed pair) and how specific that rule is
    # (0: two ingredients, 1: an ingredient and a class, 2: two classes).
    rule: str = ""
    specificity: int = 0

    @property
    def ingredients(self) -> frozenset[str]:
        """The unordered pair of ingredient keys."""
        return frozenset((self.ingredient_a, self.ingredient_b))

    def applies_to(self, route_a: str, route_b: str) -> bool:
        """Whether it applies to two drugs given by these (vocabulary) routes."""
        return route_a in self.routes and route_b in self.routes


def pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def make_interaction(
    a: tuple[str, str, str | None],
    b: tuple[str, str, str | None],
    severity: Severity,
    description: str,
    source: str,
    *,
    routes: frozenset[str] = SYSTEMIC_ROUTES,
    rule: str = "",
    specificity: int = 0,
) -> KnownInteraction:
    """Build an interaction from (key, display name, rxcui) triples, in canonical order."""
    if b[0] < a[0]:
        a, b = b, a
    return KnownInteraction(
        ingredient_a=a[0],
        ingredient_b=b[0],
        name_a=a[1],
        name_b=b[1],
        severity=severity,
        description=description,
        source=source,
        rxnorm_a=a[2],
        rxnorm_b=b[2],
        routes=routes,
        rule=rule,
        specificity=specificity,
    )


def csv_rows(
    text: str, origin: str, columns: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) pairs of a CSV whose header must contain ``columns``."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError(f"{origin}: empty file, expected a header {','.join(columns)}") from None
    header = [column.strip() for column in header]
    missing = [column for column in columns if column not in header]
    if missing:
        raise ValueError(f"{origin}:{reader.line_num}: header lacks column(s) {', '.join(missing)}")
    positions = {column: header.index(column) for column in columns}
    for record in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            raise ValueError(f"{origin}:{line}: expected {len(header)} fields, found {len(record)}")
        yield line, {column: record[index].strip() for column, index in positions.items()}


def rxcui(value: str, origin: str, line: int, column: str) -> str | None:
    if not value:
        return None
    if not _RXCUI.match(value):
        raise ValueError(f"{origin}:{line}: {column} {value!r} is not an RxNorm RxCUI")
    return value


def required(row: Mapping[str, str], column: str, origin: str, line: int) -> str:
    value = row[column]
    if not value:
        raise ValueError(f"{origin}:{line}: {column} is empty")
    return value


class CodeTable:
    """Keeps RxCUI <-> ingredient one-to-one while the data files are read."""

    def __init__(self) -> None:
        self.by_code: dict[str, str] = {}
        self.by_ingredient: dict[str, str] = {}

    def add(self, code: str | None, ingredient: str, origin: str, line: int) -> None:
        if code is None:
            return
        known_ingredient = self.by_code.get(code)
        if known_ingredient is not None and known_ingredient != ingredient:
            raise ValueError(
                f"{origin}:{line}: RxCUI {code} given for {ingredient!r}"
                f" but already used for {known_ingredient!r}"
            )
        known_code = self.by_ingredient.get(ingredient)
        if known_code is not None and known_code != code:
            raise ValueError(
                f"{origin}:{line}: {ingredient!r} given RxCUI {code}"
                f" but already has RxCUI {known_code}"
            )
        self.by_code[code] = ingredient
        self.by_ingredient[ingredient] = code
