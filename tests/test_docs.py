"""Docs that tests keep honest: every setting and every route is documented."""

from __future__ import annotations

import re
from pathlib import Path

from tether.api.routes import routes
from tether.config import Settings, settings_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_readme_settings_table_is_the_one_config_py_describes() -> None:
    """Every setting, its default and its description, as `settings_table()` writes them (to
    mend: `.venv/bin/python -c 'from tether.config import settings_table as t; print(t())'`
    and paste it over the README's table)."""
    start = README.index("| variable | default | meaning |")
    end = README.index("\n\n", start)
    assert README[start:end].splitlines() == settings_table().splitlines()
    assert all(f"TETHER_{name.upper()}" in README for name in Settings.model_fields)


def test_every_route_is_in_the_readme() -> None:
    missing = []
    for route in routes:
        path = getattr(route, "path", "")
        path = path.replace("{conversation_id}", "{id}").replace(":path}", "}")
        if f" {path}`" not in README:
            missing.append(path)
    assert missing == []


def test_docs_links_exist() -> None:
    for name in (
        "docs/contract.md",
        "docs/compaction.md",
        "docs/architecture.md",
        "docs/tokens.md",
    ):
        assert (ROOT / name).is_file(), name


def test_every_error_code_raised_is_in_the_contract() -> None:
    """Each `TetherError(status, "code", …)` in src/ names its code in docs/contract.md."""
    contract = (ROOT / "docs/contract.md").read_text()
    raised = {
        m.group(1)
        for path in (ROOT / "src/tether").rglob("*.py")
        for m in re.finditer(r'TetherError\(\s*\d{3},\s*"([a-z_]+)"', path.read_text())
    }
    assert len(raised) > 40  # the pattern still finds them
    assert sorted(c for c in raised if f"`{c}`" not in contract) == []


ARCHITECTURE = ROOT / "docs/architecture.md"
PACKAGE = ROOT / "src/tether"
FUTURE = "## Where the next pieces plug in"  # that section names modules not built yet
TREE = "```\nsrc/tether/\n"


def module_tree(doc: str) -> set[str]:
    """The paths the Modules section's tree names (`api/app.py`, `api/` for a package), read
    by indentation: two spaces a level; description lines are indented further."""
    block = doc[doc.index("## Modules") :]
    lines = block[block.index(TREE) + len(TREE) :].splitlines()
    named: set[str] = set()
    parents: list[str] = []
    for line in lines[: lines.index("```")]:
        indent = len(line) - len(line.lstrip())
        if not line.strip() or indent >= 12:
            continue  # a description carried onto the next line
        depth, name = indent // 2 - 1, line.split()[0]
        assert name.endswith((".py", "/")), f"not a module or a package: {line!r}"
        parents[depth:] = [name] if name.endswith("/") else []
        named.add("".join(parents[:depth]) + name)
    return named


def modules_in_src() -> set[str]:
    """Every module file under src/tether, a package named by its directory (`api/`)."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.name == "__init__.py" and rel.parent != Path("."):
            found.add(f"{rel.parent.as_posix()}/")
        else:
            found.add(rel.as_posix())
    return found


def test_the_architecture_names_every_module_as_it_is() -> None:
    named = module_tree(ARCHITECTURE.read_text())
    assert "engine/turn.py" in named and "api/" in named  # the tree is read
    actual = modules_in_src()
    assert sorted(actual - named) == []  # modules the doc does not name
    stale = [name for name in named - actual if not (PACKAGE / name).is_dir()]
    assert stale == []  # names of modules that do not exist (any more)


def test_every_module_path_the_architecture_mentions_exists() -> None:
    """Outside the tree too: each `…/x.py` the text names is there (but in the section on what
    is not built yet)."""
    doc = ARCHITECTURE.read_text()
    doc = doc[: doc.index(FUTURE)] + doc[doc.index("\n## ", doc.index(FUTURE) + 1) :]
    mentioned = set(re.findall(r"`((?:[\w.-]+/)+[\w.-]+\.py)`", doc))
    assert "engine/turn.py" in mentioned  # the pattern finds them
    roots = ("src/", "tests/", "bench/")

    def exists(name: str) -> bool:
        return ((ROOT if name.startswith(roots) else PACKAGE) / name).is_file()

    missing = [name for name in sorted(mentioned) if not exists(name.removeprefix("tether/"))]
    assert missing == []
