"""Docs that tests keep honest: every setting and every route is documented."""

from __future__ import annotations

import re
from pathlib import Path

from tether.api.routes import routes
from tether.config import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    missing = [
        f"TETHER_{name.upper()}"
        for name in Settings.model_fields
        if f"| `TETHER_{name.upper()}` |" not in README
    ]
    assert missing == []


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
