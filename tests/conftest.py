from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from tests.support import ScriptedUpstream, TetherServer

pytest_plugins = ["tests.store_fixtures"]  # the stores of the contract suite
OPENRESPONSES_SPEC = Path(
    os.environ.get(
        "TETHER_OPENRESPONSES_SPEC",
        Path(__file__).resolve().parents[2] / "shared/specs/openresponses/openapi.json",
    )
)

# Each test file's kind, by its name (`pytest -m "not e2e"`: everything without a process):
# unit (one module, no app), contract (every Store against the same suite), inprocess (the real
# app over ASGI, FakeUpstream and a store: no process, no socket), e2e (real `tether serve` or
# scripted-upstream processes, or a browser). A file with no kind fails the collection: give it
# one here.
KINDS = ("unit", "contract", "inprocess", "e2e")
PREFIXES = {"test_e2e_": "e2e", "test_inprocess_": "inprocess"}
FILES = {
    # e2e: they start a real server process (TetherServer, ScriptedUpstream) or a browser
    "test_bad_input.py": "e2e",
    "test_browser_sse.py": "e2e",
    "test_browser_dashboard.py": "e2e",  # chromium drives /ui against tether serve
    "test_cli.py": "e2e",
    "test_clients.py": "e2e",  # tests/clients/: real client libraries against tether serve
    "test_crash.py": "e2e",
    "test_ledger_scaling.py": "e2e",
    "test_local_model.py": "e2e",
    "test_openapi.py": "e2e",
    "test_scripted_upstream.py": "e2e",
    "test_store_contract.py": "contract",
    "test_store_manage.py": "contract",
    "test_cache.py": "unit",
    "test_chat_projection.py": "unit",
    "test_coordination.py": "unit",
    "test_compaction_cut.py": "unit",
    "test_docs.py": "unit",
    "test_hermes_reader.py": "unit",  # reads the Hermes fixture and small SQLite files
    "test_ids.py": "unit",
    "test_ledger.py": "unit",
    "test_logs.py": "unit",  # runs short Python subprocesses, no server
    "test_merge.py": "unit",
    "test_running_turn.py": "unit",
    "test_shape.py": "unit",
    "test_sqlite_store.py": "unit",  # the SQLite store alone: its file, migrations, errors
    "test_postgres_store.py": "contract",  # the PostgreSQL store alone (a local server)
    "test_migrate_postgres.py": "contract",  # `tether migrate --from` subprocesses, no server
    "test_sse.py": "unit",
    "test_tokens.py": "unit",  # one offline subprocess seeds a cache, no server
    "test_upstream_http1.py": "unit",  # the upstream client against tiny loopback servers
}


# Property tests draw hypothesis's default 100 examples each (test_compaction_cut: ~90 s on an
# idle 2-core machine); the fast run (`-m "not e2e"`, make test-fast) draws 10 of each.
hypothesis_settings.register_profile("fast", max_examples=10)


def pytest_configure(config: pytest.Config) -> None:
    if "not e2e" in (config.getoption("markexpr") or ""):
        hypothesis_settings.load_profile("fast")


def kind_of(path: Path) -> str | None:
    for prefix, kind in PREFIXES.items():
        if path.name.startswith(prefix):
            return kind
    return FILES.get(path.name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unassigned = sorted({str(item.path) for item in items if kind_of(item.path) is None})
    if unassigned:
        raise pytest.UsageError(
            "test files with no kind (unit, contract, inprocess or e2e): "
            + ", ".join(unassigned)
            + " — assign each one in tests/conftest.py (FILES or PREFIXES)"
        )
    for item in items:
        kind = kind_of(item.path)
        assert kind in KINDS
        item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(scope="session")
def spec() -> dict[str, Any]:
    """The Open Responses OpenAPI document (../shared/specs/openresponses/openapi.json, or
    TETHER_OPENRESPONSES_SPEC), for validating responses and events against its schemas."""
    data: dict[str, Any] = json.loads(OPENRESPONSES_SPEC.read_text())
    return data


@pytest.fixture(scope="session")
def scripted() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream()
    yield up
    up.close()


@pytest.fixture
def upstream(scripted: ScriptedUpstream) -> ScriptedUpstream:
    scripted.reset()
    return scripted


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    """One open-mode (no keys) Tether per test module, on its own SQLite file."""
    srv = TetherServer(tmp_path_factory.mktemp("tether") / "tether.db", scripted.base_url).start()
    yield srv
    srv.stop()
