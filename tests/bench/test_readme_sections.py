"""``--write-readme``: each benchmark's section replaced between its markers, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.report import write_readme

from bench import chaos, costs, limiter_redis, router, transformer, vllm

REPO = Path(__file__).resolve().parents[2]
SECTIONS = {
    "transformer": (transformer.START, transformer.END),
    "router": (router.START, router.END),
    "costs": (costs.START, costs.END),
    "limiter-redis": (limiter_redis.START, limiter_redis.END),
    "vllm": (vllm.START, vllm.END),
    "chaos": chaos.MARKERS,
    "chaos --stream": chaos.STREAM_MARKERS,
}


@pytest.mark.parametrize("name", list(SECTIONS))
def test_the_readme_section_is_replaced_and_nothing_else(name: str, tmp_path: Path) -> None:
    start, end = SECTIONS[name]
    readme = tmp_path / "README.md"
    text = (REPO / "README.md").read_text()
    readme.write_text(text)
    write_readme(readme, "| new | table |", start=start, end=end)
    after = readme.read_text()
    assert f"{start}\n| new | table |\n{end}" in after
    head, tail = text[: text.index(start)], text[text.index(end) :]
    assert after.startswith(head)
    assert after.endswith(tail)


def test_missing_markers_are_added_after_the_named_line(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{transformer.END}\nrest\n")
    write_readme(readme, "table", start=router.START, end=router.END, after=router.AFTER)
    assert readme.read_text() == (
        f"intro\n{transformer.END}\n\n{router.START}\ntable\n{router.END}\nrest\n"
    )


def test_a_readme_without_the_markers_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="no <!-- bench:costs:start -->"):
        write_readme(readme, "table", start=costs.START, end=costs.END)
    assert readme.read_text() == "no markers here\n"
