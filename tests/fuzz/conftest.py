"""The fuzzing runtime: its own `tbcss local up`, seeded like the one a user
starts. Not the e2e session runtime: an admin token with random input creates
subscribers and activation workflows, blocks lines, sends OTPs and issues credit
notes, none of which the e2e tests' data and timings should see."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import ROOT, LocalSystem, start_local_system, stop_local_system


@pytest.fixture(scope="session")
def fuzz_system() -> Iterator[LocalSystem]:
    system = start_local_system(ROOT / ".tbcss" / "fuzz")
    yield system
    assert stop_local_system(system) == 0, "\n".join(system.output[-20:])
