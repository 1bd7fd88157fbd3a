"""load_text never fails with anything but ConfigError, whatever the input."""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipvsmgr.config import Config, ConfigError, load_text
from tests.unit.test_fastvalidate import mutated_configs


def outcome(text: str) -> Config | ConfigError:
    try:
        return load_text(text, "fuzz.yaml")
    except ConfigError as e:
        assert e.problems, "a ConfigError must carry at least one problem"
        for p in e.problems:
            assert p.line >= 1 and p.col >= 1 and p.message
        return e


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_configs())
def test_mutated_configs_load_or_report(data: Any) -> None:
    outcome(yaml.safe_dump(data, default_flow_style=False))
    outcome(json.dumps(data))  # JSON is YAML too, with a different layout


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_arbitrary_text_loads_or_reports(text: str) -> None:
    outcome(text)


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_as_text(raw: bytes) -> None:
    outcome(raw.decode("utf-8", errors="replace"))


def test_a_nul_in_an_address_is_a_problem_not_a_crash() -> None:
    # found by the property test above (seed 56): inet_pton raises ValueError on a NUL, not OSError
    for where in ('address: "198.18.0.1\\0"', 'address: "\\0"'):
        text = f"virtual_servers:\n  - name: web\n    {where}\n    port: 80\n    reals: []\n"
        got = outcome(text)
        assert isinstance(got, ConfigError), got
        assert any(p.line == 3 for p in got.problems), got.problems
    bad_real = 'virtual_servers:\n  - {name: web, address: 198.18.0.1, port: 80, reals: [{address: "\\0"}]}\n'
    assert isinstance(outcome(bad_real), ConfigError)
