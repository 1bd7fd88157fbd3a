"""tests/package: the .deb built from this tree, lintian, and clean Debian 12 and 13 roots."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.package import debroot


@pytest.fixture(scope="session")
def deb() -> Path:
    why = debroot.tools_missing()
    if why:
        pytest.skip(why)
    return debroot.deb()


@pytest.fixture(scope="session", params=["bookworm", "trixie"])
def root(request: pytest.FixtureRequest, deb: Path) -> Path:
    """A clean Debian 12 (bookworm) or 13 (trixie) root with the package installed."""
    return debroot.make_root(str(request.param))
