"""tests/netns: root on the host kernel, inside namespaces each test creates and deletes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.lab import Lab, have_root, make_lab
from tests.netns.vrrplab import VrrpLab


@pytest.fixture
def lab() -> Iterator[Lab]:
    if not have_root():
        pytest.skip("network namespaces need root")
    lab = make_lab()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def vrrp_lab(tmp_path: Path) -> Iterator[VrrpLab]:
    """The bridged LAN of namespaces a, b, c (tests/netns/vrrplab.py)."""
    if not have_root():
        pytest.skip("network namespaces need root")
    lab = VrrpLab(tmp_path)
    try:
        lab.setup()
        yield lab
    finally:
        lab.close()
