"""Unit tests for drug name resolution: the names prescribers and pharmacies write."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest

from streams.contracts.vocabulary import Severity
from streams.domain import interactions
from streams.domain.drug_names import basic_normalise, is_resolved
from streams.domain.interactions import DrugRef, InteractionKnowledgeBase

DATA = Path(__file__).resolve().parents[2] / "streams" / "domain" / "data"


@pytest.fixture(scope="module")
def kb() -> InteractionKnowledgeBase:
    return InteractionKnowledgeBase.load_default()


def ingredients(kb: InteractionKnowledgeBase, name: str) -> frozenset[str]:
    return kb.ingredients_of(DrugRef("m1", name))


# --- the name forms of issue 13 --------------------------------------------------------------

# Each was resolved to nothing known before, so the warning beside it was silently missed.
ISSUE_FORMS = [
    # salt, ester and form words
    ("clopidogrel bisulfate 75 mg", {"clopidogrel"}, "Prilosec", Severity.MAJOR),
    ("erythromycin ethylsuccinate 400 mg", {"erythromycin"}, "Zocor", Severity.CONTRAINDICATED),
    ("valproate sodium 250 mg/5 mL", {"valproic acid"}, "meropenem", Severity.MAJOR),
    ("glyburide micronized 3 mg", {"glyburide"}, "Tracleer", Severity.CONTRAINDICATED),
    # punctuation
    ("Toprol-XL 50 mg", {"metoprolol"}, "Calan", Severity.MAJOR),
    ("TMP/SMX DS", {"sulfamethoxazole", "trimethoprim"}, "methotrexate", Severity.MAJOR),
    # dose-form words
    ("nitroglycerin 0.4 mg SL tab", {"nitroglycerin"}, "Viagra", Severity.CONTRAINDICATED),
    # combination brands
    ("Paxlovid", {"nirmatrelvir", "ritonavir"}, "Zocor", Severity.CONTRAINDICATED),
    ("Vytorin 10/40", {"ezetimibe", "simvastatin"}, "Biaxin", Severity.CONTRAINDICATED),
    ("Excedrin", {"acetaminophen", "aspirin", "caffeine"}, "Coumadin", Severity.MAJOR),
]


@pytest.mark.parametrize(("name", "expected", "other", "severity"), ISSUE_FORMS)
def test_issue_name_forms_resolve_and_warn(
    kb: InteractionKnowledgeBase,
    name: str,
    expected: set[str],
    other: str,
    severity: Severity,
) -> None:
    assert ingredients(kb, name) == expected
    found = kb.interaction_between(DrugRef("m1", name), DrugRef("m2", other))
    assert found is not None, (name, other)
    assert found.severity is severity


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Clopidogrel Bisulfate", {"clopidogrel"}),
        ("sodium valproate", {"valproic acid"}),
        ("divalproex sodium DR 500 mg", {"valproic acid"}),
        ("doxycycline hyclate 100 mg cap", {"doxycycline"}),
        ("haloperidol decanoate 50 mg/mL inj", {"haloperidol"}),
        ("Haldol Decanoate", {"haloperidol"}),
        ("amlodipine besylate 5 mg", {"amlodipine"}),
        ("escitalopram oxalate 10 mg", {"escitalopram"}),
        ("Metoprolol Succinate ER 50 mg 24 hr tab", {"metoprolol"}),
        ("Nizoral 2% shampoo", {"ketoconazole"}),
        ("Depakote ER 500", {"valproic acid"}),
        ("Wellbutrin XL 300", {"bupropion"}),
        ("Seroquel XR", {"quetiapine"}),
        ("Lamictal ODT", {"lamotrigine"}),
        ("Lantus SoloStar", {"insulin glargine"}),
        ("Advair Diskus 250/50", {"fluticasone", "salmeterol"}),
        ("potassium chloride ER 20 mEq", {"potassium chloride"}),
    ],
)
def test_salt_and_form_words(kb: InteractionKnowledgeBase, name: str, expected: set[str]) -> None:
    assert ingredients(kb, name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Toprol-XL", {"metoprolol"}),
        ("TOPROL XL", {"metoprolol"}),
        ("SMX/TMP", {"sulfamethoxazole", "trimethoprim"}),
        ("TMP-SMX", {"sulfamethoxazole", "trimethoprim"}),
        ("sulfamethoxazole/trimethoprim", {"sulfamethoxazole", "trimethoprim"}),
        ("Coumadin® 5 mg tab.", {"warfarin"}),
        ("Lipitor™, 20 mg", {"atorvastatin"}),
        ("E.E.S. 400", {"erythromycin"}),
        ("Zyrtec-D 12 Hour", {"cetirizine", "pseudoephedrine"}),
        ("Ery-Tab", {"erythromycin"}),
        ("Theo-24", {"theophylline"}),
        ("Lipitor 20 mg #30", {"atorvastatin"}),
        ("Tylenol w/ Codeine No. 3", {"acetaminophen", "codeine"}),
        ("Tylenol #3", {"acetaminophen", "codeine"}),
        ("warfarin\u2013sodium", {"warfarin"}),
    ],
)
def test_punctuation(kb: InteractionKnowledgeBase, name: str, expected: set[str]) -> None:
    assert ingredients(kb, name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("HCTZ 25 mg", {"hydrochlorothiazide"}),
        ("APAP 500 mg", {"acetaminophen"}),
        ("hydrocodone/APAP 5/325", {"hydrocodone", "acetaminophen"}),
        ("hydrocodone-APAP 5-325", {"hydrocodone", "acetaminophen"}),
        ("ASA 81 mg EC", {"aspirin"}),
        ("MTX 2.5 mg", {"methotrexate"}),
        ("NTG 0.4 mg SL", {"nitroglycerin"}),
        ("INH 300 mg", {"isoniazid"}),
        ("5-FU", {"fluorouracil"}),
        ("lisinopril-HCTZ 20-12.5", {"lisinopril", "hydrochlorothiazide"}),
        ("Diovan HCT 160-12.5", {"valsartan", "hydrochlorothiazide"}),
    ],
)
def test_abbreviations(kb: InteractionKnowledgeBase, name: str, expected: set[str]) -> None:
    assert ingredients(kb, name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Bactrim DS", {"sulfamethoxazole", "trimethoprim"}),
        ("Percocet 5/325", {"oxycodone", "acetaminophen"}),
        ("Norco 10-325", {"hydrocodone", "acetaminophen"}),
        ("Augmentin 875", {"amoxicillin", "clavulanate"}),
        ("amoxicillin/clavulanate potassium 875-125", {"amoxicillin", "clavulanate"}),
        ("Zestoretic", {"lisinopril", "hydrochlorothiazide"}),
        ("Hyzaar 50-12.5", {"losartan", "hydrochlorothiazide"}),
        ("Janumet", {"sitagliptin", "metformin"}),
        ("Symbicort 160/4.5", {"budesonide", "formoterol"}),
        ("Lomotil", {"diphenoxylate", "atropine"}),
        ("Stalevo", {"carbidopa", "levodopa", "entacapone"}),
        ("Adderall XR 20 mg", {"dextroamphetamine", "amphetamine"}),
        ("Excedrin Migraine", {"acetaminophen", "aspirin", "caffeine"}),
        ("Excedrin Extra Strength", {"acetaminophen", "aspirin", "caffeine"}),
        ("oxycodone HCl acetaminophen", {"oxycodone", "acetaminophen"}),
    ],
)
def test_combination_products(kb: InteractionKnowledgeBase, name: str, expected: set[str]) -> None:
    assert ingredients(kb, name) == expected


@pytest.mark.parametrize(
    ("brand", "ingredient"),
    [
        ("Crestor", "rosuvastatin"),
        ("Synthroid", "levothyroxine"),
        ("Eliquis", "apixaban"),
        ("Klonopin", "clonazepam"),
        ("Ambien", "zolpidem"),
        ("Neurontin", "gabapentin"),
        ("Lyrica", "pregabalin"),
        ("Dilaudid", "hydromorphone"),
        ("Pepcid", "famotidine"),
        ("Lasix", "furosemide"),
        ("Coreg", "carvedilol"),
        ("Diovan", "valsartan"),
        ("Flomax", "tamsulosin"),
        ("Singulair", "montelukast"),
        ("Zyrtec", "cetirizine"),
        ("Deltasone", "prednisone"),
        ("Keflex", "cephalexin"),
        ("Levaquin", "levofloxacin"),
        ("Valtrex", "valacyclovir"),
        ("Tamiflu", "oseltamivir"),
        ("Keppra", "levetiracetam"),
        ("Topamax", "topiramate"),
        ("Dilantin", "phenytoin"),
        ("Seroquel", "quetiapine"),
        ("Abilify", "aripiprazole"),
        ("Januvia", "sitagliptin"),
        ("Jardiance", "empagliflozin"),
        ("Ozempic", "semaglutide"),
        ("Humalog", "insulin lispro"),
    ],
)
def test_commonly_prescribed_brands(
    kb: InteractionKnowledgeBase, brand: str, ingredient: str
) -> None:
    assert ingredients(kb, brand) == {ingredient}


def test_salt_words_do_not_split_a_salt_that_is_the_drug(kb: InteractionKnowledgeBase) -> None:
    assert ingredients(kb, "potassium chloride") == {"potassium chloride"}
    assert ingredients(kb, "calcium carbonate 500 mg") == {"calcium carbonate"}
    # Brands with hyphens or spaces that are not combinations stay whole.
    assert ingredients(kb, "Klor-Con M20") == {"potassium chloride"}
    assert ingredients(kb, "MS Contin 15 mg") == {"morphine"}


def test_the_raw_name_is_kept() -> None:
    # Route detection reads the name as written; resolution only reads a normalised copy.
    drug = DrugRef("m1", "nitroglycerin 0.4 mg SL tab")
    InteractionKnowledgeBase.load_default().ingredients_of(drug)
    assert drug.name == "nitroglycerin 0.4 mg SL tab"


def test_normalising_is_idempotent_and_deterministic() -> None:
    for name, *_ in ISSUE_FORMS:
        once = basic_normalise(name)
        assert basic_normalise(once) == once
        assert basic_normalise(name) == once


# --- what "unresolved" means ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rxnorm_code", "resolved"),
    [
        ("Coumadin 5 mg", None, True),
        ("Foobarol 10 mg", "11289", True),  # a known RxCUI is enough
        ("Foobarol 10 mg", None, False),
        ("Foobarol 10 mg", "99999999", False),  # an unknown RxCUI falls back to the name
        ("aspirin/foobarol", None, False),  # every part of a combination must resolve
        ("Excedrin Cold", None, False),
        ("  ", None, False),
        ("Bactrim DS", None, True),
    ],
)
def test_is_resolved(
    kb: InteractionKnowledgeBase, name: str, rxnorm_code: str | None, resolved: bool
) -> None:
    found = kb.ingredients_of(DrugRef("m1", name, rxnorm_code))
    assert is_resolved(found, kb.ingredient_names) is resolved


# --- the synonym table and the fingerprint -------------------------------------------------------


def test_synonym_spellings_agree_on_their_ingredients() -> None:
    # Two spellings that normalise alike ("Toprol XL", "Toprol-XL") share one key; if their
    # rows listed other ingredients the loader would silently merge them.
    by_spelling: dict[str, set[str]] = defaultdict(set)
    with (DATA / "drug_synonyms.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            by_spelling[row["synonym"]].add(basic_normalise(row["ingredient_name"]))
    by_key: dict[str, dict[str, frozenset[str]]] = defaultdict(dict)
    for spelling, targets in by_spelling.items():
        key = basic_normalise(spelling)
        assert key, spelling
        by_key[key][spelling] = frozenset(targets)
    for key, spellings in by_key.items():
        assert len(set(spellings.values())) == 1, (key, spellings)


def test_synonym_table_covers_commonly_prescribed_drugs() -> None:
    with (DATA / "drug_synonyms.csv").open(encoding="utf-8") as handle:
        assert len({row["synonym"] for row in csv.DictReader(handle)}) >= 800


def test_the_name_rules_are_part_of_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    # New word lists change what a stored name resolves to, with the same data files.
    texts = (
        (DATA / "interactions.csv").read_text(encoding="utf-8"),
        (DATA / "drug_synonyms.csv").read_text(encoding="utf-8"),
    )
    before = InteractionKnowledgeBase.from_texts(*texts)
    monkeypatch.setattr(interactions, "NAME_RULES_DIGEST", "changed-rules")
    after = InteractionKnowledgeBase.from_texts(*texts)
    assert after.ingredient_names == before.ingredient_names
    assert after.fingerprint != before.fingerprint


def test_a_new_synonym_changes_the_fingerprint() -> None:
    interactions_csv = (DATA / "interactions.csv").read_text(encoding="utf-8")
    synonyms_csv = (DATA / "drug_synonyms.csv").read_text(encoding="utf-8")
    base = InteractionKnowledgeBase.from_texts(interactions_csv, synonyms_csv)
    extended = InteractionKnowledgeBase.from_texts(
        interactions_csv, synonyms_csv + "Foobarin,warfarin,\n"
    )
    assert extended.fingerprint != base.fingerprint
