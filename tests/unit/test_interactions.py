"""Unit tests for the drug-drug interaction knowledge base."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from streams.contracts.vocabulary import Severity
from streams.domain import interactions
from streams.domain.interactions import (
    DrugRef,
    InteractionKnowledgeBase,
    InteractionMatch,
    KnownInteraction,
    find_interactions,
    find_resolved_interactions,
    normalise_drug_name,
)

DATA = Path(__file__).resolve().parents[2] / "streams" / "domain" / "data"
ONC = "ONC high-priority DDI list (Phansalkar 2012)"


@pytest.fixture(scope="module")
def kb() -> InteractionKnowledgeBase:
    return InteractionKnowledgeBase.load_default()


def drug(medication_id: str, name: str, rxnorm_code: str | None = None) -> DrugRef:
    return DrugRef(medication_id=medication_id, name=name, rxnorm_code=rxnorm_code)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Warfarin 5 mg tablet", "warfarin"),
        ("  WARFARIN   Sodium 5MG Oral Tablet ", "warfarin"),
        ("warfarin sodium 5 mg tablet", "warfarin"),
        ("metoprolol succinate", "metoprolol"),
        ("Metoprolol Tartrate 25 mg", "metoprolol"),
        ("Coumadin® 2.5 mg", "coumadin"),
        ("Zocor™ 40mg film-coated tablet", "zocor"),
        ("Oxycodone HCl 5 mg / Acetaminophen 325 mg tablet", "oxycodone/acetaminophen"),
        ("Amlodipine Besylate 10 mg", "amlodipine"),
        ("potassium chloride ER 20 mEq tablet", "potassium chloride"),
        ("lithium carbonate 300 mg capsule", "lithium"),
        ("Aspirin 81 mg EC tablet [Ecotrin]", "aspirin"),
        ("Sertraline (as hydrochloride) 50 mg", "sertraline"),
        ("Bactrim DS 800 mg-160 mg", "bactrim"),
        ("sulfamethoxazole-trimethoprim 800-160 mg tablet", "sulfamethoxazole-trimethoprim"),
        ("5-fluorouracil 500 mg", "5-fluorouracil"),
        ("nitroglycerin 0.4 mg/hr patch", "nitroglycerin"),
        ("", ""),
    ],
)
def test_normalise_drug_name(raw: str, expected: str) -> None:
    assert normalise_drug_name(raw) == expected


def test_salt_words_stay_when_the_rest_is_unknown() -> None:
    assert normalise_drug_name("foobarol sodium 10 mg") == "foobarol sodium"
    assert normalise_drug_name("foobarol sodium", known_ingredients={"foobarol"}) == "foobarol"


def test_normalise_is_idempotent(kb: InteractionKnowledgeBase) -> None:
    for raw in ("Warfarin Sodium 5 mg", "Bactrim DS 800 mg-160 mg", "metoprolol succinate ER"):
        once = normalise_drug_name(raw)
        assert normalise_drug_name(once) == once
        assert kb.normalise(raw) == once


# --- matching --------------------------------------------------------------------------------


def test_warfarin_aspirin_by_rxnorm_code(kb: InteractionKnowledgeBase) -> None:
    # Names that mean nothing to the base prove the match came from the codes.
    found = kb.interaction_between(drug("m1", "Drug X", "11289"), drug("m2", "Drug Y", "1191"))
    assert found is not None
    assert found.severity is Severity.MAJOR
    assert found.ingredients == {"warfarin", "aspirin"}
    assert found.description
    assert found.source


def test_rxnorm_code_wins_over_name(kb: InteractionKnowledgeBase) -> None:
    assert kb.ingredients_of(drug("m1", "Tylenol", "11289")) == {"warfarin"}


def test_unknown_code_falls_back_to_name(kb: InteractionKnowledgeBase) -> None:
    # 855332 is a clinical-drug (SCD) code, not an ingredient: the name must carry the match.
    assert kb.ingredients_of(drug("m1", "warfarin sodium 5 MG Oral Tablet", "855332")) == {
        "warfarin"
    }


def test_brand_names(kb: InteractionKnowledgeBase) -> None:
    found = kb.interaction_between(drug("m1", "Coumadin"), drug("m2", "Bayer"))
    assert found is not None
    assert found.severity is Severity.MAJOR
    assert found.ingredients == {"warfarin", "aspirin"}


def test_salt_forms_and_strengths(kb: InteractionKnowledgeBase) -> None:
    found = kb.interaction_between(
        drug("m1", "warfarin sodium 5 mg tablet"), drug("m2", "Acetylsalicylic Acid 81 mg")
    )
    assert found is not None
    assert found.severity is Severity.MAJOR
    assert kb.ingredients_of(drug("m3", "metoprolol succinate")) == {"metoprolol"}
    assert kb.ingredients_of(drug("m4", "Toprol XL 50 mg")) == {"metoprolol"}


def test_combination_product_against_methotrexate(kb: InteractionKnowledgeBase) -> None:
    bactrim = drug("m1", "Bactrim DS")
    assert kb.ingredients_of(bactrim) == {"sulfamethoxazole", "trimethoprim"}
    found = kb.interaction_between(bactrim, drug("m2", "Methotrexate 2.5 mg tablet"))
    assert found is not None
    assert found.severity is Severity.MAJOR
    assert "methotrexate" in found.ingredients


def test_combination_written_out_by_ingredients(kb: InteractionKnowledgeBase) -> None:
    expected = {"sulfamethoxazole", "trimethoprim"}
    for name in (
        "Sulfamethoxazole 800 MG / Trimethoprim 160 MG Oral Tablet",
        "sulfamethoxazole and trimethoprim",
        "sulfamethoxazole + trimethoprim",
        "sulfamethoxazole-trimethoprim 800-160 mg tablet",
        "Septra DS",
    ):
        assert kb.ingredients_of(drug("m1", name)) == expected


def test_combination_takes_the_most_severe_pair(kb: InteractionKnowledgeBase) -> None:
    # Kaletra is lopinavir + ritonavir; both make simvastatin contraindicated (ritonavir as a
    # listed pair, lopinavir by the statin rule); the tie goes to the alphabetically first.
    found = kb.interaction_between(drug("m1", "Kaletra"), drug("m2", "Zocor 20 mg"))
    assert found is not None
    assert found.severity is Severity.CONTRAINDICATED
    assert found.ingredients == {"lopinavir", "simvastatin"}


def test_hyphenated_brand_is_not_split(kb: InteractionKnowledgeBase) -> None:
    assert kb.ingredients_of(drug("m1", "Ery-Tab 250 mg")) == {"erythromycin"}
    assert kb.ingredients_of(drug("m1", "Klor-Con 10 mEq")) == {"potassium chloride"}
    assert kb.ingredients_of(drug("m1", "aspirin-foobarol")) == {"aspirin-foobarol"}


def test_unknown_drugs_give_no_match(kb: InteractionKnowledgeBase) -> None:
    assert kb.interaction_between(drug("m1", "Foobarol 10 mg"), drug("m2", "Aspirin")) is None
    assert kb.interaction_between(drug("m1", "Foobarol"), drug("m2", "Quuxamab")) is None
    assert kb.ingredients_of(drug("m1", "Foobarol 10 mg tablet")) == {"foobarol"}
    assert kb.ingredients_of(drug("m1", "  ")) == frozenset()


def test_same_ingredient_gives_no_match(kb: InteractionKnowledgeBase) -> None:
    assert kb.interaction_between(drug("m1", "Coumadin"), drug("m2", "warfarin sodium")) is None
    assert kb.interaction_between(drug("m1", "x", "11289"), drug("m2", "Jantoven")) is None
    # Bactrim against plain trimethoprim shares an ingredient and has no other pair.
    assert kb.interaction_between(drug("m1", "Bactrim"), drug("m2", "trimethoprim")) is None


def test_symmetric(kb: InteractionKnowledgeBase) -> None:
    pairs = [
        (drug("m1", "Coumadin"), drug("m2", "Bayer")),
        (drug("m1", "Bactrim"), drug("m2", "methotrexate")),
        (drug("m1", "sildenafil"), drug("m2", "Nitrostat")),
        (drug("m1", "Foobarol"), drug("m2", "aspirin")),
    ]
    for a, b in pairs:
        assert kb.interaction_between(a, b) == kb.interaction_between(b, a)
    for interaction in kb.interactions[:20]:
        assert kb.interaction_of(interaction.ingredient_a, interaction.ingredient_b) is interaction
        assert kb.interaction_of(interaction.ingredient_b, interaction.ingredient_a) is interaction


@pytest.mark.parametrize(
    ("first", "second", "severity"),
    [
        ("Zocor", "Biaxin", Severity.CONTRAINDICATED),
        ("Viagra", "nitroglycerin 0.4 mg sublingual tablet", Severity.CONTRAINDICATED),
        ("Plavix", "Prilosec", Severity.MAJOR),
        ("lithium carbonate", "Advil", Severity.MAJOR),
        ("lithium carbonate", "Zestril", Severity.MAJOR),
        ("Aldactone", "K-Dur", Severity.MAJOR),
        ("Lanoxin", "Cordarone", Severity.MAJOR),
        ("Lanoxin", "Calan", Severity.MAJOR),
        ("Zanaflex", "Cipro", Severity.CONTRAINDICATED),
        ("Nardil", "Prozac", Severity.CONTRAINDICATED),
        ("Zyvox", "Zoloft", Severity.MAJOR),
        ("Duragesic", "Xanax", Severity.MAJOR),
        ("Imuran", "Zyloprim", Severity.MAJOR),
        ("Coumadin", "Flagyl", Severity.MAJOR),
        ("Coumadin", "Diflucan", Severity.MAJOR),
        ("Prilosec", "Valium", Severity.MINOR),
    ],
)
def test_well_known_pairs(
    kb: InteractionKnowledgeBase, first: str, second: str, severity: Severity
) -> None:
    found = kb.interaction_between(drug("m1", first), drug("m2", second))
    assert found is not None, (first, second)
    assert found.severity is severity


# --- find_interactions -----------------------------------------------------------------------


def test_find_interactions(kb: InteractionKnowledgeBase) -> None:
    new = drug("med-2", "Coumadin 5 mg")
    active = [
        drug("med-9", "Metronidazole 500 mg"),
        drug("med-2", "warfarin"),  # the same medication, re-prescribed
        drug("med-1", "Bayer"),
        drug("med-5", "Lipitor"),  # no interaction with warfarin
        drug("med-7", "Jantoven"),  # same ingredient
        drug("med-3", "Tylenol"),
        drug("med-1", "Bayer"),  # repeated entry
    ]
    matches = find_interactions(kb, new, active)
    assert [match.medication_ids for match in matches] == [
        ("med-1", "med-2"),
        ("med-2", "med-9"),
        ("med-2", "med-3"),
    ]
    assert [match.severity for match in matches] == [
        Severity.MAJOR,
        Severity.MAJOR,
        Severity.MODERATE,
    ]
    first = matches[0]
    assert isinstance(first, InteractionMatch)
    assert first.drug_a == drug("med-1", "Bayer")
    assert first.drug_b == new
    assert first.interaction.ingredients == {"warfarin", "aspirin"}
    # The same question asked again gives the same answer, whatever the input order.
    assert find_interactions(kb, new, reversed(active)) == matches


def test_find_interactions_with_no_active_drugs(kb: InteractionKnowledgeBase) -> None:
    assert find_interactions(kb, drug("m1", "Coumadin"), []) == []


FIND_ACTIVE = [
    drug("med-9", "Metronidazole 500 mg"),
    drug("med-2", "warfarin"),
    drug("med-1", "Bayer"),
    drug("med-5", "Lipitor"),
    drug("med-7", "Jantoven"),
    drug("med-3", "Tylenol"),
    drug("med-1", "Bayer"),
    drug("med-4", "Bactrim DS 800 mg-160 mg"),
    drug("med-6", "Kaletra"),
]


def test_find_resolved_interactions_agrees_with_find_interactions(
    kb: InteractionKnowledgeBase,
) -> None:
    for new in (drug("med-2", "Coumadin 5 mg"), drug("med-8", "Methotrexate"), drug("m", "Zocor")):
        resolved = [(other, kb.ingredients_of(other)) for other in FIND_ACTIVE]
        assert find_resolved_interactions(
            kb, new, kb.ingredients_of(new), resolved
        ) == find_interactions(kb, new, FIND_ACTIVE)


def test_find_resolved_interactions_normalises_no_name(
    kb: InteractionKnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = drug("med-2", "Coumadin 5 mg")
    new_ingredients = kb.ingredients_of(new)
    resolved = [(other, kb.ingredients_of(other)) for other in FIND_ACTIVE]
    normalised: list[str] = []
    original = interactions._basic_normalise

    def counted(name: str) -> str:
        normalised.append(name)
        return original(name)

    monkeypatch.setattr(interactions, "_basic_normalise", counted)
    matches = find_resolved_interactions(kb, new, new_ingredients, resolved)
    assert [match.medication_ids for match in matches] == [
        ("med-1", "med-2"),
        ("med-2", "med-4"),
        ("med-2", "med-9"),
        ("med-2", "med-3"),
    ]
    assert normalised == []
    # find_interactions resolves the new drug and every drug it is given, each time.
    find_interactions(kb, new, FIND_ACTIVE)
    assert len(normalised) == 1 + len(FIND_ACTIVE)


def test_interaction_across_is_interaction_between_on_ingredients(
    kb: InteractionKnowledgeBase,
) -> None:
    for a in FIND_ACTIVE:
        for b in FIND_ACTIVE:
            assert kb.interaction_across(
                kb.ingredients_of(a), kb.ingredients_of(b)
            ) == kb.interaction_between(a, b)


def test_partners_of(kb: InteractionKnowledgeBase) -> None:
    partners = kb.partners_of({"warfarin"})
    assert {"aspirin", "acetaminophen", "metronidazole"} <= partners
    assert "warfarin" not in partners
    assert all(kb.interaction_of("warfarin", other) is not None for other in partners)
    assert kb.partners_of(["warfarin", "simvastatin"]) == partners | kb.partners_of({"simvastatin"})
    assert kb.partners_of({"foobarol"}) == frozenset()
    assert kb.partners_of([]) == frozenset()


def test_the_fingerprint_names_what_drugs_resolve_to(tmp_path: Path) -> None:
    default = InteractionKnowledgeBase.load_default()
    again = InteractionKnowledgeBase.from_files(
        DATA / "interactions.csv",
        DATA / "drug_synonyms.csv",
        classes_csv=DATA / "drug_classes.csv",
        rules_csv=DATA / "class_rules.csv",
    )
    assert again is not default
    assert again.fingerprint == default.fingerprint
    assert len(default.fingerprint) == 16
    # A new synonym or ingredient can change what a name resolves to.
    ddinter = write_csv(
        tmp_path / "ddinter.csv",
        ["DDInterID_A", "Drug_A", "DDInterID_B", "Drug_B", "Level"],
        [["DDInter1", "Foobarol", "DDInter2", "Warfarin", "Moderate"]],
    )
    assert default.with_ddinter_csv(ddinter).fingerprint != default.fingerprint
    # A severity alone does not: every drug still resolves to the same ingredients.
    raised = write_csv(
        tmp_path / "raised.csv",
        ["DDInterID_A", "Drug_A", "DDInterID_B", "Drug_B", "Level"],
        [["DDInter4", "Warfarin", "DDInter5", "Acetaminophen", "Major"]],
    )
    assert default.with_ddinter_csv(raised).fingerprint == default.fingerprint


# --- the shipped data ------------------------------------------------------------------------


def test_shipped_kb_size(kb: InteractionKnowledgeBase) -> None:
    assert len(kb) >= 70
    assert len(kb) == len(kb.interactions) == len(list(kb))


def test_shipped_csv_has_no_duplicate_pairs_and_valid_fields() -> None:
    with (DATA / "interactions.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 70
    seen: set[frozenset[str]] = set()
    for row in rows:
        pair = frozenset((row["name_a"].strip().lower(), row["name_b"].strip().lower()))
        assert len(pair) == 2, row
        assert pair not in seen, row
        seen.add(pair)
        assert row["severity"] in {level.value for level in Severity}, row
        assert row["source"].strip(), row
        assert row["description"].strip().endswith("."), row
        for column in ("rxnorm_a", "rxnorm_b"):
            assert row[column] == "" or row[column].isdigit(), row


def test_every_interaction_is_complete(kb: InteractionKnowledgeBase) -> None:
    severities = set()
    for interaction in kb:
        assert isinstance(interaction, KnownInteraction)
        assert interaction.ingredient_a < interaction.ingredient_b
        assert isinstance(interaction.severity, Severity)
        assert interaction.source.strip()
        assert interaction.description.strip()
        severities.add(interaction.severity)
    assert severities == set(Severity)


def test_shipped_codes_are_consistent(kb: InteractionKnowledgeBase) -> None:
    expected = {
        "11289": "warfarin",
        "1191": "aspirin",
        "5640": "ibuprofen",
        "7258": "naproxen",
        "703": "amiodarone",
        "36567": "simvastatin",
        "21212": "clarithromycin",
        "6851": "methotrexate",
        "6448": "lithium",
        "136411": "sildenafil",
        "4917": "nitroglycerin",
        "32968": "clopidogrel",
        "7646": "omeprazole",
        "10180": "sulfamethoxazole",
        "10829": "trimethoprim",
        "57258": "tizanidine",
        "2551": "ciprofloxacin",
        "6918": "metoprolol",
    }
    for code, ingredient in expected.items():
        assert kb.rxnorm_ingredient(code) == ingredient


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("simvastatin", "clarithromycin"),
        ("lovastatin", "itraconazole"),
        ("tizanidine", "ciprofloxacin"),
        ("tizanidine", "fluvoxamine"),
        ("ramelteon", "fluvoxamine"),
        ("atazanavir", "omeprazole"),
        ("phenelzine", "fluoxetine"),
        ("phenelzine", "tramadol"),
        ("phenelzine", "dextroamphetamine"),
        ("tranylcypromine", "amitriptyline"),
        ("phenelzine", "sumatriptan"),
        ("amiodarone", "citalopram"),
        ("clarithromycin", "pimozide"),
        ("cisapride", "erythromycin"),
        ("citalopram", "thioridazine"),
        ("ergotamine", "clarithromycin"),
        ("irinotecan", "ketoconazole"),
        ("febuxostat", "azathioprine"),
        ("atazanavir", "rifampin"),
    ],
)
def test_onc_high_priority_list_is_represented(
    kb: InteractionKnowledgeBase, a: str, b: str
) -> None:
    found = kb.interaction_of(a, b)
    assert found is not None, (a, b)
    assert found.source == ONC
    assert found.severity in {Severity.CONTRAINDICATED, Severity.MAJOR}


def test_onc_classes_are_expanded_into_several_pairs(kb: InteractionKnowledgeBase) -> None:
    onc = [interaction for interaction in kb if interaction.source == ONC]
    assert len(onc) >= 40
    maois = {"phenelzine", "tranylcypromine", "isocarboxazid", "selegiline", "procarbazine"}
    assert sum(1 for i in onc if i.ingredients & maois) >= 10
    qt_terms = ("QT", "torsades")
    assert sum(1 for i in onc if any(term in i.description for term in qt_terms)) >= 10


def test_synonym_file_has_enough_rows() -> None:
    with (DATA / "drug_synonyms.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 60
    assert {row["ingredient_name"] for row in rows if row["synonym"] == "Bactrim"} == {
        "sulfamethoxazole",
        "trimethoprim",
    }


def test_load_default_is_shared_and_immutable(kb: InteractionKnowledgeBase) -> None:
    assert InteractionKnowledgeBase.load_default() is kb
    with pytest.raises(AttributeError):
        kb.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        kb._pairs[("a", "b")] = kb.interactions[0]  # type: ignore[index]


# --- DDInter extension -----------------------------------------------------------------------


def test_ddinter_extension(kb: InteractionKnowledgeBase, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "ddinter_B01.csv",
        ["DDInterID_A", "Drug_A", "DDInterID_B", "Drug_B", "Level"],
        [
            # New pair, names only (DDInter uses DrugBank-style names).
            ["DDInter1", "Foobarol", "DDInter2", "Acetylsalicylic acid", "Moderate"],
            # Skipped.
            ["DDInter3", "Quuxamab", "DDInter4", "Warfarin", "Unknown"],
            # Already in the base as moderate: DDInter raises it, the description stays.
            ["DDInter4", "Warfarin", "DDInter5", "Acetaminophen", "Major"],
            # Already in the base as major: a lower DDInter level changes nothing.
            ["DDInter4", "Warfarin", "DDInter6", "Amiodarone", "Minor"],
            # The same new pair twice, in both orders: the more severe wins.
            ["DDInter7", "Zorblatin", "DDInter8", "Metoprolol", "Minor"],
            ["DDInter8", "Metoprolol", "DDInter7", "Zorblatin", "Major"],
        ],
    )
    extended = kb.with_ddinter_csv(path)

    assert extended is not kb
    assert len(extended) == len(kb) + 2
    assert len(InteractionKnowledgeBase.load_default()) == len(kb)

    new = extended.interaction_between(drug("m1", "Foobarol 10 mg"), drug("m2", "Bayer"))
    assert new is not None
    assert new.severity is Severity.MODERATE
    assert new.source == "DDInter"
    assert new.ingredients == {"foobarol", "aspirin"}

    assert extended.interaction_between(drug("m1", "Quuxamab"), drug("m2", "Coumadin")) is None

    base = kb.interaction_of("warfarin", "acetaminophen")
    raised = extended.interaction_of("warfarin", "acetaminophen")
    assert base is not None
    assert raised is not None
    assert base.severity is Severity.MODERATE
    assert raised.severity is Severity.MAJOR
    assert raised.description == base.description
    assert "DDInter" in raised.source

    assert extended.interaction_of("warfarin", "amiodarone") == kb.interaction_of(
        "warfarin", "amiodarone"
    )

    twice = extended.interaction_of("zorblatin", "metoprolol")
    assert twice is not None
    assert twice.severity is Severity.MAJOR

    assert "foobarol" in extended.ingredient_names
    assert normalise_drug_name("foobarol sodium", extended.ingredient_names) == "foobarol"


def test_ddinter_bad_level_names_file_and_line(
    kb: InteractionKnowledgeBase, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "ddinter.csv",
        ["DDInterID_A", "Drug_A", "DDInterID_B", "Drug_B", "Level"],
        [
            ["DDInter1", "Foobarol", "DDInter2", "Aspirin", "Major"],
            ["DDInter1", "Foobarol", "DDInter3", "Warfarin", "Severe"],
        ],
    )
    with pytest.raises(ValueError, match=r"ddinter\.csv:3: Level 'Severe'"):
        kb.with_ddinter_csv(path)


def test_ddinter_missing_column(kb: InteractionKnowledgeBase, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "ddinter.csv", ["Drug_A", "Drug_B", "Level"], [])
    with pytest.raises(ValueError, match=r"ddinter\.csv:1: header lacks column"):
        kb.with_ddinter_csv(path)


# --- malformed input -------------------------------------------------------------------------

HEADER = ["rxnorm_a", "name_a", "rxnorm_b", "name_b", "severity", "description", "source"]
GOOD = ["11289", "warfarin", "1191", "aspirin", "major", "Bleeding.", "test"]


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        (["11289", "warfarin", "5640", "ibuprofen", "severe", "Bleeding.", "test"], "severity"),
        (["11289", "warfarin", "5640", "ibuprofen", "major", "", "test"], "description is empty"),
        (["11289", "warfarin", "5640", "ibuprofen", "major", "Bleeding.", ""], "source is empty"),
        (["11289", "", "5640", "ibuprofen", "major", "Bleeding.", "test"], "name_a is empty"),
        (["abc", "warfarin", "5640", "ibuprofen", "major", "Bleeding.", "test"], "not an RxNorm"),
        (["1191", "aspirin", "11289", "warfarin", "minor", "Again.", "test"], "already given"),
        (["11289", "warfarin", "11289", "warfarin", "major", "Self.", "test"], "with itself"),
        (["999", "warfarin", "5640", "ibuprofen", "major", "Bleeding.", "test"], "RxCUI"),
        (["11289", "warfarin", "5640", "ibuprofen", "major"], "expected 7 fields"),
    ],
)
def test_malformed_row_names_file_and_line(
    tmp_path: Path, bad_row: list[str], message: str
) -> None:
    path = write_csv(tmp_path / "interactions.csv", HEADER, [GOOD, bad_row])
    with pytest.raises(ValueError, match=r"interactions\.csv:3: ") as caught:
        InteractionKnowledgeBase.from_files(path)
    assert message in str(caught.value)


def test_malformed_synonym_row(tmp_path: Path) -> None:
    interactions = write_csv(tmp_path / "interactions.csv", HEADER, [GOOD])
    synonyms = write_csv(
        tmp_path / "synonyms.csv",
        ["synonym", "ingredient_name", "rxnorm"],
        [["Coumadin", "warfarin", "11289"], ["Bayer", "aspirin", "5640"]],
    )
    with pytest.raises(ValueError, match=r"synonyms\.csv:3: .*RxCUI 5640"):
        InteractionKnowledgeBase.from_files(interactions, synonyms)


def test_small_kb_from_files(tmp_path: Path) -> None:
    interactions = write_csv(tmp_path / "interactions.csv", HEADER, [GOOD])
    synonyms = write_csv(
        tmp_path / "synonyms.csv",
        ["synonym", "ingredient_name", "rxnorm"],
        [["Coumadin", "warfarin", "11289"]],
    )
    small = InteractionKnowledgeBase.from_files(interactions, synonyms)
    assert len(small) == 1
    found = small.interaction_between(drug("a", "Coumadin"), drug("b", "x", "1191"))
    assert found is not None
    assert found.severity is Severity.MAJOR


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "interactions.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty file"):
        InteractionKnowledgeBase.from_files(path)
