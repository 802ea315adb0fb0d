"""docs/interactions.md: generated from the knowledge base's data, committed, never stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.cli import main
from streams.domain.interaction_classes import default_catalog
from streams.domain.interaction_coverage import render_coverage_markdown, summary_lines
from streams.domain.interactions import InteractionKnowledgeBase
from streams.settings import REPOSITORY_ROOT

COVERAGE_PAGE = REPOSITORY_ROOT / "docs" / "interactions.md"


@pytest.fixture(scope="module")
def page() -> str:
    return render_coverage_markdown(default_catalog(), InteractionKnowledgeBase.load_default())


def test_committed_page_is_up_to_date(page: str) -> None:
    committed = COVERAGE_PAGE.read_text() if COVERAGE_PAGE.exists() else ""
    assert committed == page, (
        "docs/interactions.md is out of date with streams/domain/data; "
        "regenerate it with `medstream interactions coverage` and commit it"
    )


def test_all_fifteen_onc_interactions_are_at_full_membership(page: str) -> None:
    rows = [line for line in page.splitlines() if line[:3].strip("| ").isdigit()]
    assert {int(row.split("|")[1]) for row in rows} == set(range(1, 16))
    # One rule per item of the paper's Table 2, each at the membership SOURCES.md documents.
    assert len(rows) == 15
    assert all(row.endswith("| full |") for row in rows)
    assert "`onc-14-tranylcypromine-procarbazine`" in page
    assert "bepridil | class `qt_known_risk`" not in page


def test_every_class_and_rule_is_listed(page: str) -> None:
    catalog = default_catalog()
    for class_id in catalog.classes:
        assert f"| `{class_id}` |" in page
    for rule in catalog.rules:
        assert f"| `{rule.rule_id}` |" in page
    assert "not a substitute for a clinical decision-support product" in page


def test_the_command_prints_counts_and_writes_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], page: str
) -> None:
    target = tmp_path / "interactions.md"
    with pytest.raises(SystemExit) as exited:
        main(["interactions", "coverage", "--output", str(target)])
    assert exited.value.code == 0
    assert target.read_text() == page
    printed = capsys.readouterr().out
    lines = summary_lines(default_catalog(), InteractionKnowledgeBase.load_default())
    assert printed.startswith("\n".join(lines))
    assert "ONC high-priority list: 15 interactions" in printed
