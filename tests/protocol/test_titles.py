"""Process titles (protocol/titles.py): what each process calls itself, and what a title says it is."""
from __future__ import annotations

import pytest

from protocol import titles


@pytest.mark.parametrize(("title", "kind"), [
    (titles.m_title(7), "M"), ("gmpsim M0", "M"), ("gmpsim M", "other"), ("gmpsim M7x", "other"),
    (titles.COORDINATOR, "coordinator"), (titles.agent_title("local"), "agent"),
    (titles.forker_title("h-1"), "forker"), (titles.spare_title("local"), "spare"),
    ("gmpsim agentx local", "other"), ("python3", "other"), ("", "other"),
])
def test_a_title_names_its_kind(title, kind):
    assert titles.kind(title) == kind


def test_titles_are_what_ps_shows():
    # the README's ps example: these exact strings
    assert [titles.COORDINATOR, titles.agent_title("local"), titles.forker_title("local"),
            titles.spare_title("local"), titles.m_title(7)] == [
        "gmpsim coordinator", "gmpsim agent local", "gmpsim forker local", "gmpsim spare local", "gmpsim M7"]
