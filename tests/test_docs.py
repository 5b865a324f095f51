"""The README stays a one-screen guide: short, its set-up commands the ones CI runs, every
docs/ page linked from it, and no link pointing nowhere; and no file cites a document a user
of the repository does not have."""

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


# What a user of the repository has: its own folders (not data/, runs/ or build outputs).
SOURCES = ("README.md", "pyproject.toml", ".ci", "autotune", "tql", "tests", "docs", "benchmarks", "studies")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".sh", ".cfg", ""}
# A document named like README.md or CONTRIBUTING.md, a docs/ page, or a path out of the repository.
UPPER_DOC = re.compile(r"(?<![\w/.-])([A-Z][A-Z0-9_-]*\.md)\b")
DOCS_PAGE = re.compile(r"(?<![\w.-])((?:\.\./)*docs/[\w.-]+\.md)\b")
OUTSIDE = re.compile(r"(?<![\w.])\.\./shared/[\w./-]+")


def missing_citations(text: str, names: set[str], pages: set[str]) -> list[str]:
    """The documents ``text`` cites that the repository lacks: an all-capitals ``NAME.md`` not
    among ``names`` (file names in the repository), a ``docs/PAGE.md`` not among ``pages``,
    and any path into the folder beside the repository (``../shared/...``)."""
    missing = [name for name in UPPER_DOC.findall(text) if name not in names]
    missing += [page for page in DOCS_PAGE.findall(text) if page.split("docs/")[-1] not in pages]
    return missing + OUTSIDE.findall(text)


def repository_files() -> list[Path]:
    files = []
    for source in SOURCES:
        path = ROOT / source
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()
                                                 and "__pycache__" not in p.parts and p.suffix in TEXT_SUFFIXES]
    return files


def test_the_citation_check_finds_a_document_that_is_not_here():
    names, pages = {"README.md"}, {"collapse.md"}
    assert missing_citations("see NOTES.md 3a and README.md", names, pages) == ["NOTES.md"]
    assert missing_citations("docs/collapse.md and [x](../docs/nowhere.md)", names, pages) == ["../docs/nowhere.md"]
    assert missing_citations("notes in `../shared/NOTES.md`", names | {"NOTES.md"}, pages) == ["../shared/NOTES.md"]
    assert missing_citations("writes OUT/report.md and summary.json", names, pages) == []  # outputs are not citations


def test_no_file_cites_a_document_the_repository_does_not_have():
    files = repository_files()
    names, pages = {p.name for p in files}, {p.name for p in PAGES}
    assert len(files) > 100 and "published.md" in pages
    cited = {str(p.relative_to(ROOT)): missing for p in files if p != Path(__file__).resolve()  # its examples
             if (missing := missing_citations(p.read_text(errors="replace"), names, pages))}
    assert cited == {}
