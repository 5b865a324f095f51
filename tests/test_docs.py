"""The README stays a one-screen guide: short, its set-up commands the ones CI runs, every
docs/ page linked from it, and no link pointing nowhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_readme_fits_a_screen_and_has_exactly_two_set_up_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    main_job, tests = bash_blocks(text)
    assert main_job.endswith("tql-tune run --tasks all") and "-c requirements-lock.txt" in main_job
    assert tests in (ROOT / ".ci" / "run").read_text()  # CI runs the README's test command


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target).resolve() for target in LINK.findall(README.read_text())}
    assert PAGES and [page.name for page in PAGES if page.resolve() not in linked] == []


def test_every_relative_link_points_to_a_file():
    broken = [(page.name, target) for page in [README, *PAGES] for target in LINK.findall(page.read_text())
              if not target.startswith(("http://", "https://")) and not (page.parent / target).exists()]
    assert broken == []
