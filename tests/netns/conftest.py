"""tests/netns: root on the host kernel, inside namespaces each test creates and deletes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.netns.lab import Lab, have_root, make_lab


@pytest.fixture
def lab() -> Iterator[Lab]:
    if not have_root():
        pytest.skip("network namespaces need root")
    lab = make_lab()
    try:
        yield lab
    finally:
        lab.close()
