"""Shared settings for the unit tests (pure logic: no root, no network, no kernel)."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps caches (e.g. unicode tables for st.text) in a storage directory,
# by default ./.hypothesis in the working tree; keep them out of the repository.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), f"ipvsmgr-unit-hypothesis-{os.getuid()}"))

# No example database: every property test is deterministic enough at its example count,
# and a failure prints its falsifying example anyway.
settings.register_profile(
    "unit",
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("unit")
