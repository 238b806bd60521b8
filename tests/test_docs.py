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
