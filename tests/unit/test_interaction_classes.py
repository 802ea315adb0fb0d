"""Unit tests for the class layer: drug classes, class rules and route-aware matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.contracts.vocabulary import Severity
from streams.domain.interaction_classes import (
    ClassCatalog,
    ClassRule,
    default_catalog,
    merge_pairs,
    parse_catalog,
)
from streams.domain.interaction_rows import CodeTable, make_interaction
from streams.domain.interactions import (
    DrugRef,
    InteractionKnowledgeBase,
    find_interactions,
)
from streams.domain.routes import LOCAL_ROUTES, SYSTEMIC_ROUTES

DATA = Path(__file__).resolve().parents[2] / "streams" / "domain" / "data"
CATALOG = default_catalog()


@pytest.fixture(scope="module")
def kb() -> InteractionKnowledgeBase:
    return InteractionKnowledgeBase.load_default()


def drug(
    medication_id: str, name: str, rxnorm_code: str | None = None, route: str | None = None
) -> DrugRef:
    return DrugRef(medication_id, name, rxnorm_code, route)


def _two_of(catalog: ClassCatalog, side: str, is_class: bool) -> tuple[str, ...]:
    members = catalog.ingredients_of_side(side, is_class)
    return (members[0], members[-1]) if len(members) > 1 else members


@pytest.mark.parametrize("rule", CATALOG.rules, ids=lambda rule: rule.rule_id)
def test_every_rule_holds_for_two_members_on_each_side(
    kb: InteractionKnowledgeBase, rule: ClassRule
) -> None:
    lefts = _two_of(CATALOG, rule.left, rule.left_is_class)
    rights = _two_of(CATALOG, rule.right, rule.right_is_class)
    if rule.left_is_class:
        assert len(lefts) == 2, rule.left
    if rule.right_is_class:
        assert len(rights) == 2, rule.right
    checked = 0
    for a in lefts:
        for b in rights:
            if a == b:
                continue
            found = kb.interaction_of(a, b)
            assert found is not None, (rule.rule_id, a, b)
            # This rule, or a more specific one (or an equally specific, more severe one).
            assert found.specificity <= rule.specificity, (rule.rule_id, a, b, found.rule)
            if found.specificity == rule.specificity:
                assert found.severity.rank <= rule.severity.rank, (rule.rule_id, a, b)
            if found.rule == rule.rule_id:
                assert found.severity is rule.severity
                assert found.source == rule.source
                assert found.routes == rule.routes
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize(
    ("a", "b", "severity", "rule"),
    [
        # The examples of issue 13, item 3.
        ("fluoxetine", "tranylcypromine", Severity.CONTRAINDICATED, "onc-04-serotonergic-maoi"),
        ("amitriptyline", "phenelzine", Severity.CONTRAINDICATED, "onc-07-tca-maoi"),
        ("methadone", "ondansetron", Severity.MAJOR, "onc-08-qt-qt"),
        ("oxycodone", "lorazepam", Severity.MAJOR, "opioid-benzodiazepine"),
        ("warfarin", "fluoxetine", Severity.MODERATE, "anticoagulant-ssri-snri"),
        ("apixaban", "aspirin", Severity.MAJOR, "anticoagulant-nsaid"),
        (
            "tranylcypromine",
            "procarbazine",
            Severity.CONTRAINDICATED,
            "onc-14-tranylcypromine-procarbazine",
        ),
        # The fifteen ONC interactions (Phansalkar 2012, Table 2), two members on each side.
        ("phendimetrazine", "isocarboxazid", Severity.CONTRAINDICATED, "onc-01-amphetamine-maoi"),
        ("lisdexamfetamine", "selegiline", Severity.CONTRAINDICATED, "onc-01-amphetamine-maoi"),
        ("atazanavir", "rabeprazole", Severity.MAJOR, "onc-02-atazanavir-ppi"),
        ("atazanavir", "dexlansoprazole", Severity.MAJOR, "onc-02-atazanavir-ppi"),
        # (febuxostat has both thiopurines as listed pairs, which win over its rule)
        ("febuxostat", "mercaptopurine", Severity.CONTRAINDICATED, ""),
        ("nefazodone", "isocarboxazid", Severity.CONTRAINDICATED, "onc-04-serotonergic-maoi"),
        ("milnacipran", "selegiline", Severity.CONTRAINDICATED, "onc-04-serotonergic-maoi"),
        (
            "irinotecan",
            "posaconazole",
            Severity.MAJOR,
            "onc-05-irinotecan-strong-cyp3a4-inhibitor",
        ),
        (
            "irinotecan",
            "tipranavir",
            Severity.MAJOR,
            "onc-05-irinotecan-strong-cyp3a4-inhibitor",
        ),
        ("tapentadol", "isocarboxazid", Severity.CONTRAINDICATED, "onc-06-narcotic-maoi"),
        ("dextromethorphan", "procarbazine", Severity.CONTRAINDICATED, "onc-06-narcotic-maoi"),
        ("trimipramine", "selegiline", Severity.CONTRAINDICATED, "onc-07-tca-maoi"),
        ("protriptyline", "procarbazine", Severity.CONTRAINDICATED, "onc-07-tca-maoi"),
        ("levofloxacin", "hydroxychloroquine", Severity.MAJOR, "onc-08-qt-qt"),
        ("vandetanib", "anagrelide", Severity.MAJOR, "onc-08-qt-qt"),
        ("ramelteon", "ciprofloxacin", Severity.MAJOR, "onc-09-ramelteon-cyp1a2"),
        (
            "fosphenytoin",
            "tipranavir",
            Severity.MAJOR,
            "onc-10-cyp3a4-inducer-protease-inhibitor",
        ),
        (
            "rifapentine",
            "fosamprenavir",
            Severity.MAJOR,
            "onc-10-cyp3a4-inducer-protease-inhibitor",
        ),
        ("lovastatin", "nefazodone", Severity.CONTRAINDICATED, "onc-11-statin-cyp3a4"),
        ("simvastatin", "posaconazole", Severity.CONTRAINDICATED, "onc-11-statin-cyp3a4"),
        ("dihydroergotamine", "cobicistat", Severity.CONTRAINDICATED, "onc-12-ergot-cyp3a4"),
        ("methylergonovine", "telithromycin", Severity.CONTRAINDICATED, "onc-12-ergot-cyp3a4"),
        ("rizatriptan", "isocarboxazid", Severity.CONTRAINDICATED, "onc-15-triptan-maoi"),
        ("zolmitriptan", "selegiline", Severity.CONTRAINDICATED, "onc-15-triptan-maoi"),
        # Two members of each side of further rules.
        ("hydromorphone", "clonazepam", Severity.MAJOR, "opioid-benzodiazepine"),
        ("codeine", "midazolam", Severity.MAJOR, "opioid-benzodiazepine"),
        ("oxycodone", "gabapentin", Severity.MAJOR, "opioid-cns-depressant"),
        ("morphine", "zolpidem", Severity.MAJOR, "opioid-cns-depressant"),
        ("rasagiline", "ciprofloxacin", Severity.MODERATE, "rasagiline-ciprofloxacin"),
        ("pimozide", "posaconazole", Severity.CONTRAINDICATED, "pimozide-cyp3a4"),
        ("thioridazine", "bupropion", Severity.CONTRAINDICATED, "thioridazine-cyp2d6"),
        ("irinotecan", "phenytoin", Severity.MAJOR, "irinotecan-cyp3a4-inducer"),
        ("irinotecan", "atazanavir", Severity.MAJOR, "irinotecan-atazanavir"),
        ("warfarin", "meloxicam", Severity.MAJOR, "warfarin-nsaid"),
        ("dabigatran", "ticagrelor", Severity.MAJOR, "anticoagulant-p2y12"),
        ("rasagiline", "pseudoephedrine", Severity.CONTRAINDICATED, "maoi-sympathomimetic"),
        ("safinamide", "ephedrine", Severity.CONTRAINDICATED, "maoi-sympathomimetic"),
        ("rasagiline", "vilazodone", Severity.CONTRAINDICATED, "maoi-ssri-snri"),
        ("linezolid", "escitalopram", Severity.MAJOR, "maoi-other-ssri-snri"),
        ("sertraline", "tapentadol", Severity.MAJOR, "ssri-snri-narcotic"),
    ],
)
def test_well_known_class_combinations(
    kb: InteractionKnowledgeBase, a: str, b: str, severity: Severity, rule: str
) -> None:
    found = kb.interaction_of(a, b)
    assert found is not None
    assert (found.severity, found.rule) == (severity, rule)


def test_the_most_specific_rule_wins(kb: InteractionKnowledgeBase) -> None:
    # A listed pair beats the class rules: procarbazine + sumatriptan is listed as major,
    # though the MAOI-triptan class rule says contraindicated.
    listed = kb.interaction_of("procarbazine", "sumatriptan")
    assert listed is not None
    assert (listed.rule, listed.severity) == ("", Severity.MAJOR)
    # An ingredient-class rule beats a class-class rule: thioridazine with a QT drug.
    single = kb.interaction_of("thioridazine", "ondansetron")
    assert single is not None
    assert single.rule == "thioridazine-qt"
    assert single.severity is Severity.CONTRAINDICATED
    # Two ingredients named by a rule beat the MAOI-MAOI class rule.
    pair = kb.interaction_of("tranylcypromine", "procarbazine")
    assert pair is not None
    assert pair.specificity == 0


def test_merge_prefers_specific_then_severe() -> None:
    text_classes = (
        "class_id,class_name,ingredient,rxnorm,source\n"
        "a,Class A,alpha,,S\na,Class A,beta,,S\nb,Class B,gamma,,S\nb,Class B,delta,,S\n"
    )
    text_rules = (
        "rule_id,left,right,severity,routes,onc,description,source\n"
        "r1,class:a,class:b,minor,,,Class pair.,S\n"
        "r2,alpha,class:b,moderate,,,Ingredient with class.,S\n"
        "r3,class:a,class:b,major,,,Same specificity as r1 and more severe.,S\n"
    )
    catalog = parse_catalog(text_classes, text_rules, CodeTable())
    expanded = catalog.expand()
    assert len(expanded) == 4
    assert expanded[("alpha", "gamma")].rule == "r2"
    assert expanded[("beta", "delta")].rule == "r3"
    # A listed pair (specificity 0) is kept against any rule, even a more severe one.
    listed = make_interaction(
        ("alpha", "alpha", None), ("delta", "delta", None), Severity.MINOR, "Listed.", "S"
    )
    merged = merge_pairs({("alpha", "delta"): listed}, expanded)
    assert merged[("alpha", "delta")] is listed
    assert merged[("alpha", "gamma")].rule == "r2"


@pytest.mark.parametrize(
    ("classes", "rules", "message"),
    [
        ("a,A,alpha,,S\n", "r1,class:x,alpha,major,,,D.,S\n", "unknown class 'x'"),
        ("a,A,alpha,,S\n", "r1,class:a,beta,fatal,,,D.,S\n", "severity 'fatal'"),
        ("a,A,alpha,,S\n", "r1,class:a,beta,major,skin;eyes,,D.,S\n", "route 'skin'"),
        ("a,A,alpha,,S\na,A,alpha,,S\n", "", "already in class"),
        ("a,A,alpha,12x,S\n", "", "not an RxNorm RxCUI"),
        ("a,A,alpha,,S\n", "r1,beta,beta,major,,,D.,S\n", "paired with itself"),
        (
            "a,A,alpha,,S\n",
            "r1,class:a,beta,major,,,D.,S\nr1,class:a,gamma,major,,,D.,S\n",
            "twice",
        ),
    ],
)
def test_malformed_class_data_names_file_and_line(classes: str, rules: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_catalog(
            "class_id,class_name,ingredient,rxnorm,source\n" + classes,
            "rule_id,left,right,severity,routes,onc,description,source\n" + rules,
            CodeTable(),
        )
    assert "csv:" in str(raised.value)


def test_class_codes_must_agree_with_the_other_files() -> None:
    with pytest.raises(ValueError, match="RxCUI 11289"):
        InteractionKnowledgeBase.from_texts(
            (DATA / "interactions.csv").read_text(),
            classes_csv="class_id,class_name,ingredient,rxnorm,source\na,A,aspirin,11289,S\n",
            rules_csv="rule_id,left,right,severity,routes,onc,description,source\n",
        )


def test_shipped_classes_are_sourced_and_every_member_is_known(
    kb: InteractionKnowledgeBase,
) -> None:
    assert len(CATALOG.classes) >= 20
    sources = (DATA / "SOURCES.md").read_text()
    for drug_class in CATALOG.classes.values():
        assert drug_class.source.strip()
        assert f"`{drug_class.class_id}`" in sources, drug_class.class_id
        for member in drug_class.members:
            assert member.ingredient in kb.ingredient_names
            if member.rxnorm is not None:
                assert kb.rxnorm_ingredient(member.rxnorm) == member.ingredient
    for rule in CATALOG.rules:
        assert rule.description.endswith("."), rule.rule_id
        assert rule.source.split(" (")[0] in sources, rule.rule_id


def test_the_onc_list_is_covered_at_full_membership(kb: InteractionKnowledgeBase) -> None:
    numbers = {rule.onc for rule in CATALOG.rules if rule.onc is not None}
    assert numbers == set(range(1, 16))
    for rule in CATALOG.rules:
        if rule.onc is None:
            continue
        for a, b in CATALOG.pairs_of(rule):
            assert kb.interaction_of(a, b) is not None, (rule.rule_id, a, b)


# The fifteen pairs of Phansalkar et al. 2012, Table 2 (object - precipitant), as the ONC
# numbering of the list (confirmed by McEvoy et al. 2017 and AJHP 2022, Table 4) gives them.
ONC_SIDES = {
    1: {("class:amphetamine_derivative", "class:maoi_onc")},
    2: {("atazanavir", "class:ppi")},
    3: {("febuxostat", "class:thiopurine")},
    4: {("class:ssri_serotonergic", "class:maoi_onc")},
    5: {("irinotecan", "class:cyp3a4_strong_inhibitor")},
    6: {("class:serotonergic_opioid", "class:maoi_onc")},
    7: {("class:tca", "class:maoi_onc")},
    8: {("class:qt_known_risk", "class:qt_known_risk")},
    9: {("ramelteon", "class:cyp1a2_inhibitor")},
    10: {("class:cyp3a4_inducer", "class:hiv_protease_inhibitor")},
    11: {("class:statin_cyp3a4", "class:cyp3a4_inhibitor")},
    12: {("class:ergot", "class:cyp3a4_inhibitor")},
    13: {("tizanidine", "class:cyp1a2_inhibitor")},
    14: {("tranylcypromine", "procarbazine")},
    15: {("class:triptan_mao", "class:maoi_onc")},
}


def _written(side: str, is_class: bool) -> str:
    return f"class:{side}" if is_class else side


def test_the_onc_rules_are_the_fifteen_pairs_of_the_paper() -> None:
    found: dict[int, set[tuple[str, str]]] = {}
    for rule in CATALOG.rules:
        if rule.onc is not None:
            assert rule.rule_id.startswith(f"onc-{rule.onc:02d}-"), rule.rule_id
            assert rule.source == "ONC high-priority DDI list (Phansalkar 2012)"
            found.setdefault(rule.onc, set()).add(
                (_written(rule.left, rule.left_is_class), _written(rule.right, rule.right_is_class))
            )
        else:
            assert not rule.rule_id.startswith("onc-"), rule.rule_id
            assert "ONC" not in rule.source, rule.rule_id
    assert found == ONC_SIDES
    # The paper's own members of a few classes (Table 2).
    assert set(CATALOG.classes["maoi_onc"].ingredients) == {
        "tranylcypromine",
        "phenelzine",
        "isocarboxazid",
        "procarbazine",
        "selegiline",
    }
    assert len(CATALOG.classes["amphetamine_derivative"].members) == 12
    assert {"phendimetrazine", "benzphetamine", "diethylpropion", "atomoxetine"} <= set(
        CATALOG.classes["amphetamine_derivative"].ingredients
    )
    assert set(CATALOG.classes["ppi"].ingredients) == {
        "omeprazole",
        "lansoprazole",
        "pantoprazole",
        "rabeprazole",
        "esomeprazole",
        "dexlansoprazole",
    }


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # Called ONC items before, though the paper's list has none of them.
        ("bepridil", "sotalol"),
        ("pimozide", "clarithromycin"),
        ("thioridazine", "paroxetine"),
        ("methotrexate", "trimethoprim"),
        ("warfarin", "ibuprofen"),
        ("rasagiline", "ciprofloxacin"),
    ],
)
def test_pairs_outside_the_onc_list_are_not_called_onc(
    kb: InteractionKnowledgeBase, a: str, b: str
) -> None:
    found = kb.interaction_of(a, b)
    assert found is not None
    if found.rule:
        rule = next(rule for rule in CATALOG.rules if rule.rule_id == found.rule)
        # bepridil with sotalol: two known-risk QT drugs, so ONC item 8 (QT with QT).
        assert rule.onc in (None, 8), (a, b, rule.rule_id)
        assert rule.onc is None or a == "bepridil"


# --- routes ----------------------------------------------------------------------------------


def test_local_forms_do_not_trigger_systemic_rules(kb: InteractionKnowledgeBase) -> None:
    simvastatin = drug("m2", "simvastatin 40 mg tablet")
    for topical in (
        drug("m1", "Ketoconazole 2% cream"),
        drug("m1", "ketoconazole 2% shampoo"),
        drug("m1", "Nizoral 2% shampoo", "6135"),
        drug("m1", "ketoconazole", route="6064005"),
        drug("m1", "ketoconazole", route="topical"),
    ):
        assert kb.interaction_between(topical, simvastatin) is None, topical
    for oral in (
        drug("m1", "ketoconazole 200 mg tablet"),
        drug("m1", "ketoconazole"),
        drug("m1", "Nizoral 200 mg", route="26643006"),
        drug("m1", "ketoconazole 2% cream", route="oral"),
    ):
        found = kb.interaction_between(oral, simvastatin)
        assert found is not None, oral
        assert found.severity is Severity.CONTRAINDICATED, oral


def test_nizoral_shampoo_resolves_to_ketoconazole(kb: InteractionKnowledgeBase) -> None:
    assert kb.ingredients_of(drug("m1", "Nizoral 2% shampoo")) == {"ketoconazole"}
    found = find_interactions(kb, drug("m1", "Nizoral 2% shampoo"), [drug("m2", "Zocor 20 mg")])
    assert found == []


def test_transdermal_and_other_absorbed_routes_stay_systemic(
    kb: InteractionKnowledgeBase,
) -> None:
    patch = drug("m1", "fentanyl 25 mcg/hr patch")
    found = kb.interaction_between(patch, drug("m2", "Xanax 1 mg"))
    assert found is not None
    assert found.rule in {"", "opioid-benzodiazepine"}
    nasal = drug("m1", "sumatriptan nasal spray")
    assert kb.interaction_between(nasal, drug("m2", "Nardil 15 mg")) is not None


def test_a_rule_for_all_routes_fires_for_local_forms(kb: InteractionKnowledgeBase) -> None:
    found = kb.interaction_between(drug("m1", "miconazole 2% oral gel"), drug("m2", "warfarin"))
    assert found is not None
    assert found.rule == "warfarin-miconazole"
    vaginal = kb.interaction_between(drug("m1", "miconazole 2% cream"), drug("m2", "Coumadin"))
    assert vaginal is not None
    assert found.routes == LOCAL_ROUTES | SYSTEMIC_ROUTES


def test_find_interactions_reads_the_route_of_each_drug(kb: InteractionKnowledgeBase) -> None:
    active = [drug("a", "Ketoconazole 2% cream"), drug("b", "clarithromycin 500 mg")]
    found = find_interactions(kb, drug("n", "simvastatin 20 mg"), active)
    assert [match.medication_ids for match in found] == [("b", "n")]
