from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import ScriptedUpstream, TetherServer


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
