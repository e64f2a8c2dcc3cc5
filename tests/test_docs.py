"""The user docs stay readable: a short README that maps every page of docs/, links that resolve, and no
project-process vocabulary (issue numbers, work-session words) that means nothing to a user."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
USER_DOCS = [README, *DOCS]

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# issue numbers ("issue 14", "#12") and words of the process that wrote the docs, not of the tool
PROCESS = re.compile(
    r"\bissues?\s*#?\d+|(?<![\w/&])#\d+\b|\bthis stop\b|\bstop's\b|\bprevious stop\b|\bsessions?\b"
    r"|\bthe lead\b|\blanded\b|\bdone-when\b", re.IGNORECASE)


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code (code may hold anything)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", md.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def links(md: Path) -> list[str]:
    return [u for u in LINK.findall(prose_keep_links(md.read_text())) if not re.match(r"[a-z]+:", u)]


def prose_keep_links(text: str) -> str:
    # only fenced blocks are dropped: a link's text may be inline code ([`make evidence`](docs/evidence.md))
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines; move detail into a page under docs/"


def test_every_docs_page_is_linked_from_the_readme():
    assert DOCS, "docs/ holds no pages"
    targets = {(README.parent / u.split("#")[0]).resolve() for u in links(README) if u.split("#")[0]}
    missing = [p.name for p in DOCS if p.resolve() not in targets]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_relative_links_resolve():
    broken = []
    for md in USER_DOCS:
        for url in links(md):
            path, _, frag = url.partition("#")
            target = (md.parent / path).resolve() if path else md
            if not target.exists():
                broken.append(f"{md.relative_to(ROOT)}: {url}")
            elif frag and target.suffix == ".md" and frag not in anchors(target):
                broken.append(f"{md.relative_to(ROOT)}: {url} (no heading '#{frag}')")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_no_issue_numbers_or_process_words():
    found = []
    for md in USER_DOCS:
        for i, line in enumerate(prose(md.read_text()).splitlines(), 1):
            if m := PROCESS.search(line):
                found.append(f"{md.relative_to(ROOT)}: {m.group(0)!r} in {line.strip()[:80]!r}")
    assert not found, "user docs speak of the process, not the tool:\n" + "\n".join(found)


def test_the_checks_can_fail(tmp_path):
    # the patterns catch what they are for, and a missing page or anchor is seen as broken
    assert PROCESS.search("Blind cleaning (issue 12)") and PROCESS.search("see #12") and PROCESS.search("this stop")
    assert not PROCESS.search("its leading singular component") and not PROCESS.search("pytorch#141358")
    page = tmp_path / "a.md"
    page.write_text("# A title (`x.y`)\n\n[b](b.md) [self](#a-title-xy) [gone](#nope)\n")
    assert links(page) == ["b.md", "#a-title-xy", "#nope"]
    assert anchors(page) == {"a-title-xy"}
