"""yamlsource.parse: the same values as yaml.safe_load, positions on demand, strict structure.

Where it differs from yaml.safe_load on purpose (YAML 1.1 octal, base 60, yes/no/on/off;
alias budget): test_yaml_hostile.py.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ipvsmgr.config import ConfigError
from ipvsmgr.config.yamlsource import Document, parse

F = "in.yaml"


def data(text: str) -> Any:
    return parse(text, F).data


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1 is not True, 1.0 is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=False))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse(text, F)
    return [str(p) for p in e.value.problems]


# ---------------------------------------------------------------- same values as yaml.safe_load

CASES = [
    "a: 1",
    "a: 0o17",  # not an int in YAML 1.1
    "a: 0x1F",
    "a: 0b101",
    "a: 1_000",
    "a: -0",
    "a: +5",
    "a: 00",
    "a: 0",
    "a: '010'",
    'a: "0x1F"',
    "a: [true, False, TRUE, false, True, FALSE]",
    "a: [yES, nO, oN, oFF, yeS]",  # not booleans in YAML 1.1 either
    "a: 0_0",
    "a: 089",  # not octal: text in YAML 1.1
    "a: 0:20",  # not base 60 in YAML 1.1
    "a: 1:60",
    "a: ~",
    "a: null",
    "a:",
    "a: 1.5",
    "a: 1.",
    "a: .5",
    "a: 1e3",
    "a: 1.0e+3",
    "a: -1.5e-3",
    "a: .inf",
    "a: -.inf",
    "a: .nan",
    "a: 2001:db8::1",
    "a: '2001:db8::1'",
    "a: ::1",
    "a: fe80::1",
    "a: 198.18.0.1",
    "a: 1.2.3",  # two dots: text, whatever the first character (the fast path)
    "a: -1.5.",
    "a: .5.5",
    "a: 255.255.255.0",
    "a: 80s",
    "a: 5 min",
    "a: !!str 80",
    "a: !!int '80'",
    "a: !!float 1",
    "a: !!bool yes",  # an explicit tag asks for YAML 1.1's reading
    "a: !!int 010",
    "a: !!int 1:20",
    'a: "\\t\\u00e9"',
    "a: 'it''s'",
    "a: |\n  x\n  y\n",
    "a: >\n  x\n  y\n",
    "a: |-\n  x\n",
    "a: &x {b: 1}\nc: *x",
    "a: &n 5\nb: [*n, *n]",
    "a: &l [1, 2]\nb: *l",
    "- &m {x: 1}\n- *m",
    "? a\n: b",
    "1: a\n2: b",
    "true: a",
    "null: a",
    "a: [1, [2, {b: c}], {}]",
    "a:\n  - b: 1\n    c: [x, 'y', \"z\"]\n  - - 1\n    - 2\n",
    "{a: 1, b: [1, 2], c: {d: null}}",
    "[1, two, 3.0, null, true]",
    "plain string",
    "42",
    "1²: a\nb: ١٢",  # digits int() refuses, or reads though YAML does not: text, as in safe_load
    "",
    "# just a comment\n",
    "---\na: 1\n",
    "a: 1\n...\n",
    "virtual_servers:\n  - {address: 198.18.0.1, port: 80, reals: [{address: '2001:db8::1', weight: 10}]}\n",
]


@pytest.mark.parametrize("text", CASES)
def test_same_values_as_safe_load(text: str) -> None:
    assert same(data(text), yaml.safe_load(text)), (data(text), yaml.safe_load(text))


def test_timestamps_stay_text() -> None:
    # a deliberate difference: a date means nothing in this configuration
    assert data("a: 2024-01-01\nb: 2001-12-14t21:59:43.10-05:00\n") == {
        "a": "2024-01-01",
        "b": "2001-12-14t21:59:43.10-05:00",
    }


def test_aliases_share_the_anchored_value() -> None:
    d = data("a: &x {b: 1}\nc: *x\n")
    assert d["a"] is d["c"]


def test_binary_tag() -> None:
    assert data("a: !!binary aGVsbG8=") == {"a": b"hello"}


# generated documents: any JSON-like value, dumped in several styles
scalar_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.sampled_from(["010", "0x1F", "yes", "no", "on", "null", "~", "1:20", "2001:db8::1", "::1", "1.2.3.4",
                     "1e3", "1_000", "-", "?", ":", "#", "&a", "*a", "!x", "'", '"', "{", "[", "%", "@", "`",
                     "a: b", "a #b", "---", "..."]),
)  # fmt: skip
keys = st.text().filter(lambda k: k != "<<")  # a `<<` key is a merge key, rejected on purpose
documents = st.recursive(
    scalar_values,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=200)
@given(
    documents,
    st.sampled_from([False, True, None]),
    st.sampled_from([None, "'", '"']),
    st.booleans(),
)
def test_generated_documents_match_safe_load(
    doc: Any, flow: bool | None, style: str | None, anchors: bool
) -> None:
    value = [doc, doc] if anchors else doc  # the same object twice: dumped with an anchor and an alias
    text = yaml.safe_dump(value, default_flow_style=flow, default_style=style, allow_unicode=True)
    assert same(data(text), yaml.safe_load(text)), text


# ---------------------------------------------------------------- positions

LOCATE_TEXT = (
    "ipvs:\n"  # 1
    "  drain_timeout: 5m\n"  # 2
    "virtual_servers:\n"  # 3
    "  - name: web\n"  # 4
    "    port: 80\n"  # 5
    "    reals:\n"  # 6
    "      - {address: 198.18.1.1, weight: 3}\n"  # 7
    "      - address: '2001:db8::1'\n"  # 8
    "        tunnel:\n"  # 9
    "          type: gue\n"  # 10
    "  - [a, b]\n"  # 11
    "empty:\n"  # 12
    "alias: &x {p: 1}\n"  # 13
    "other: *x\n"  # 14
)


@pytest.mark.parametrize(
    ("path", "value_pos", "key_pos"),
    [
        ((), (1, 1), (1, 1)),
        (("ipvs",), (2, 3), (1, 1)),
        (("ipvs", "drain_timeout"), (2, 18), (2, 3)),
        (("virtual_servers",), (4, 3), (3, 1)),
        (("virtual_servers", 0), (4, 5), (4, 5)),  # a list item has no key: its value
        (("virtual_servers", 0, "name"), (4, 11), (4, 5)),
        (("virtual_servers", 0, "port"), (5, 11), (5, 5)),
        (("virtual_servers", 0, "reals"), (7, 7), (6, 5)),
        (("virtual_servers", 0, "reals", 0), (7, 9), (7, 9)),
        (("virtual_servers", 0, "reals", 0, "address"), (7, 19), (7, 10)),
        (("virtual_servers", 0, "reals", 0, "weight"), (7, 39), (7, 31)),
        (("virtual_servers", 0, "reals", 1), (8, 9), (8, 9)),
        (("virtual_servers", 0, "reals", 1, "address"), (8, 18), (8, 9)),
        (("virtual_servers", 0, "reals", 1, "tunnel"), (10, 11), (9, 9)),
        (("virtual_servers", 0, "reals", 1, "tunnel", "type"), (10, 17), (10, 11)),
        (("virtual_servers", 1), (11, 5), (11, 5)),
        (("virtual_servers", 1, 1), (11, 9), (11, 9)),
        (("empty",), (12, 7), (12, 1)),  # an empty value sits right after its key
        (("alias",), (13, 8), (13, 1)),
        (("other",), (14, 8), (14, 1)),
    ],
)
def test_locate(path: tuple[Any, ...], value_pos: tuple[int, int], key_pos: tuple[int, int]) -> None:
    doc = parse(LOCATE_TEXT, F)
    assert doc.locate(path) == value_pos
    assert doc.locate(path, key=True) == key_pos


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("virtual_servers", 0, "missing"), (4, 5)),  # the nearest parent that exists
        (("virtual_servers", 0, "reals", 7, "weight"), (7, 7)),
        (("virtual_servers", 5), (4, 3)),
        (("nothing", "at", "all"), (1, 1)),
        (("other", "p"), (14, 8)),  # inside an alias: the alias itself
    ],
)
def test_locate_falls_back_to_the_nearest_parent(path: tuple[Any, ...], expected: tuple[int, int]) -> None:
    doc = parse(LOCATE_TEXT, F)
    assert doc.locate(path) == expected
    assert doc.locate(path, key=True) == expected


def test_problem_uses_locate() -> None:
    doc = parse(LOCATE_TEXT, F)
    p = doc.problem(("virtual_servers", 0, "port"), "bad port")
    assert str(p) == f"{F}:5:11: bad port"
    assert str(doc.problem(("ipvs", "drain_timeout"), "bad key", key=True)) == f"{F}:2:3: bad key"


def test_positions_are_found_lazily() -> None:
    doc = parse("a: 1\n", F)
    assert isinstance(doc, Document)
    assert doc._builder is None  # no second pass until a position is asked for
    assert doc.locate(("a",)) == (1, 4)
    assert doc._builder is not None


def test_locate_counts_unicode_characters_as_columns() -> None:
    doc = parse("é: 1\nb: [ü, x]\n", F)
    assert doc.locate(("é",)) == (1, 4)
    assert doc.locate(("b", 1)) == (2, 8)


# ---------------------------------------------------------------- what is refused


def test_duplicate_keys_are_reported_at_the_second_key() -> None:
    assert problems_of("a: 1\nb: 2\na: 3\n") == [
        f"{F}:3:1: duplicate key 'a' (the first one is ignored by YAML): the first is on line 1"
    ]
    assert problems_of("x:\n  - {p: 1, q: 2, p: 3}\n") == [
        f"{F}:2:18: duplicate key 'p' (the first one is ignored by YAML): the first is on line 2"
    ]


def test_every_duplicate_key_is_reported() -> None:
    got = problems_of("a: 1\na: 2\nb: {c: 1, c: 2}\n")
    assert [p.split(": ", 1)[0] for p in got] == [f"{F}:2:1", f"{F}:3:11"]


def test_merge_keys_are_rejected() -> None:
    with pytest.raises(ConfigError):
        parse("base: &b {port: 80}\nweb:\n  <<: *b\n  name: web\n", F)
    with pytest.raises(ConfigError):
        parse("<<: {a: 1}\nb: 2\n", F)


def test_merge_keys_are_reported_at_the_key() -> None:
    got = problems_of("base: &b {port: 80}\nweb:\n  <<: *b\n  name: web\n")
    assert len(got) == 1
    assert got[0].startswith(f"{F}:3:3: YAML merge keys (<<) are not supported")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a: 1\n---\nb: 2\n", "2:1"),
        ("a: 1\n---\n", "2:1"),
        ("--- 1\n--- 2\n", "2:1"),
        ("a: 1\n...\n---\nb: 1\n", "3:1"),
    ],
)
def test_multiple_documents_are_rejected(text: str, where: str) -> None:
    assert problems_of(text) == [f"{F}:{where}: only one YAML document is allowed"]


@pytest.mark.parametrize("text", ["---\n---\na: 1\n", "--- null\n--- {a: 1}\n", "# c\n---\n~\n---\nb: 2\n"])
def test_multiple_documents_after_an_empty_one_are_rejected(text: str) -> None:
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(text)
    with pytest.raises(ConfigError):
        parse(text, F)


def test_unknown_alias() -> None:
    assert problems_of("a: *nope\n") == [f"{F}:1:4: unknown alias *nope"]


@pytest.mark.parametrize("text", ["{a: 1}: 2\n", "[1]: 2\n", "? [a]\n: b\n"])
def test_complex_keys_are_rejected(text: str) -> None:
    (p,) = problems_of(text)
    assert p.endswith("mapping keys must be plain scalars")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a: b: c\n", "1:5"),
        ("a:\n\tb: 1\n", "2:1"),
        ("a: 1\n b: 2\n", "2:3"),
    ],
)
def test_syntax_errors_point_where_pyyaml_does(text: str, where: str) -> None:
    with pytest.raises(yaml.MarkedYAMLError) as e:
        yaml.safe_load(text)
    mark = e.value.problem_mark
    assert mark is not None
    assert where == f"{mark.line + 1}:{mark.column + 1}"
    (p,) = problems_of(text)
    assert p.startswith(f"{F}:{where}: YAML syntax error: ")


@pytest.mark.parametrize(
    ("text", "where", "gave_up"), [("a: 'x\n", "1:4", "2:1"), ("a: [1, 2\n", "1:4", "2:1")]
)
def test_an_opening_never_closed_is_reported_at_the_opening(text: str, where: str, gave_up: str) -> None:
    # PyYAML points where it gave up (here the end of the file); the opening is what to fix
    with pytest.raises(yaml.MarkedYAMLError) as e:
        yaml.safe_load(text)
    mark = e.value.problem_mark
    assert mark is not None and gave_up == f"{mark.line + 1}:{mark.column + 1}"
    (p,) = problems_of(text)
    assert p.startswith(f"{F}:{where}: YAML syntax error: ") and "never closed" in p
    line, col = gave_up.split(":")
    assert p.endswith(f"at line {line}, column {col}")


@settings(max_examples=200)
@given(st.text(alphabet=st.sampled_from(list("ab: -[]{},'\"\n\t#&*!|>?%@`~01.")), max_size=30))
def test_arbitrary_text_parses_or_raises_config_error(text: str) -> None:
    try:
        parse(text, F)
    except ConfigError as e:
        assert e.problems
        for p in e.problems:
            assert p.file == F and p.line >= 1 and p.col >= 1


@pytest.mark.parametrize(
    "text", ["a: !!int x\n", "a: !!float x\n", "a: !!bool x\n"], ids=["int", "float", "bool"]
)
def test_a_value_that_does_not_fit_its_tag_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse(text, F)


def test_an_unknown_tag_is_reported_at_the_value() -> None:
    (p,) = problems_of("a: 1\nb: !foo x\n")
    assert p.startswith(f"{F}:2:4: ")
