"""ipvsmgr/exposition.py against prometheus_client (a test-only dependency) as
the oracle: the same families give the same bytes, and its parser reads back
every value, label and escape."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from ipvsmgr import exposition

LABEL_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
SMALL = st.one_of(
    st.integers(min_value=0, max_value=10**9),
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
    st.sampled_from([math.inf, -math.inf, 0.0, 1e-9, 999999.9, 1234567.0]),
)


class _Once:
    def __init__(self, fams: list[object]) -> None:
        self.fams = fams

    def collect(self) -> list[object]:
        return self.fams


def library(rows: list[tuple[str, str, list[str], list[float]]], values: list[list[str]]) -> bytes:
    fams: list[object] = [InfoMetricFamily("build", "version\nand \\ more", value={"version": "1"})]
    for (name, kind, labels, nums), lv in zip(rows, values, strict=True):
        cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        fam = cls(name, f"help of {name}", labels=labels)
        for v in nums:
            fam.add_metric(lv, v)
        fams.append(fam)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Once(fams))  # type: ignore[arg-type]
    return bytes(generate_latest(reg))


def ours(rows: list[tuple[str, str, list[str], list[float]]], values: list[list[str]]) -> bytes:
    fams = [exposition.info("build", "version\nand \\ more", {"version": "1"})]
    for (name, kind, labels, nums), lv in zip(rows, values, strict=True):
        make = exposition.counter if kind == "counter" else exposition.gauge
        fam = make(name, f"help of {name}", labels)
        for v in nums:
            fam.add_metric(lv, v)
        fams.append(fam)
    return exposition.render(fams)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b_total", "c_seconds"]),
            st.sampled_from(["counter", "gauge"]),
            st.sampled_from([[], ["zeta", "alpha"], ["one"]]),
            st.lists(SMALL, max_size=3),
        ),
        max_size=4,
        unique_by=lambda r: r[0],
    ),
    st.data(),
)
def test_same_bytes_as_the_library(
    rows: list[tuple[str, str, list[str], list[float]]], data: st.DataObject
) -> None:
    values = [[data.draw(LABEL_TEXT) for _ in labels] for _, _, labels, _ in rows]
    assert ours(rows, values) == library(rows, values)


def test_big_numbers_are_written_as_go_does_and_read_back() -> None:
    # Go's FormatFloat(v, 'g', -1, 64); prometheus_client writes e+010 for the same.
    cases = {
        1234567.0: "1.234567e+06",
        12345678901.0: "1.2345678901e+10",
        1e15: "1e+15",
        2.0**63: "9.223372036854776e+18",
        123456.0: "123456.0",
        -12345678.0: "-12345678.0",  # negative values keep Python's form, as the library's
    }
    for v, text in cases.items():
        assert exposition.number(v) == text
    fam = exposition.counter("bytes", "Bytes.", ["real"])
    for i, v in enumerate(cases):
        fam.add_metric([str(i)], v)
    parsed = {
        s.labels["real"]: s.value
        for f in text_string_to_metric_families(exposition.render([fam]).decode())
        for s in f.samples
    }
    assert parsed == {str(i): v for i, v in enumerate(cases)}


def test_wrong_number_of_label_values_is_refused() -> None:
    fam = exposition.gauge("g", "G.", ["a", "b"])
    try:
        fam.add_metric(["1"], 1)
    except ValueError as e:
        assert "2 label values wanted, got 1" in str(e)
    else:
        raise AssertionError("accepted")
