"""Hostile or surprising YAML: alias bombs, YAML 1.1 numbers and booleans, huge values in messages."""

from __future__ import annotations

import re
import time
import tracemalloc
from pathlib import Path

import pytest

from ipvsmgr.config import ConfigError, Problem, errors, load_text, yamlsource
from ipvsmgr.config.yamlsource import parse

F = "h.yaml"
CORPUS = Path(__file__).parent / "corpus"


def problems(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as e:
        load_text(text, F)
    return e.value.problems


def the_problem(text: str) -> Problem:
    (p,) = problems(text)
    return p


def at(text: str, needle: str, nth: int = 1) -> tuple[int, int]:
    """1-based line and column of the nth occurrence of needle."""
    idx = -1
    for _ in range(nth):
        idx = text.index(needle, idx + 1)
    line = text.count("\n", 0, idx) + 1
    return line, idx - (text.rfind("\n", 0, idx) + 1) + 1


def value_at(text: str, key: str, value: str) -> tuple[int, int]:
    """Position of the value in `key: value`."""
    line, col = at(text, f"{key}: {value}")
    return line, col + len(key) + 2


def vs_text(fields: str) -> str:
    return f"virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n{fields}"


# ---------------------------------------------------------------- alias bombs


def laughs(levels: int = 9, width: int = 10) -> str:
    lines = ["lol0: &lol0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def shaped_bomb(width: int = 1000) -> str:
    """An alias bomb that the schema accepts level by level: servers x reals x status codes."""
    codes = ", ".join(["200"] * width)
    reals = ", ".join(["*r"] * width)
    servers = "".join("  - *v\n" for _ in range(width))
    return (
        "virtual_servers:\n"
        "  - &v\n"
        "    address: 198.18.0.1\n"
        "    port: 80\n"
        f"    reals: [&r {{address: 198.18.1.1, health_check: {{type: http, http: {{status: [{codes}]}}}}}}, {reals}]\n"  # noqa: E501
        f"{servers}"
    )


@pytest.mark.parametrize("text", [laughs(), shaped_bomb()], ids=["billion-laughs", "schema-shaped"])
def test_an_alias_bomb_is_refused_fast_at_the_alias_over_budget(text: str) -> None:
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        p = the_problem(text)
    finally:
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert p.message.startswith(f"YAML aliases expand to more than {yamlsource.ALIAS_BUDGET:,} nodes"), p
    line = text.splitlines()[p.line - 1]
    assert line[p.col - 1] == "*", (p, line)  # the alias that went over the budget
    assert elapsed < 0.5, elapsed  # measured: a few milliseconds
    assert peak < 20 * 2**20, peak


def test_the_budget_is_crossed_where_expected() -> None:
    # sizes in nodes: lol0 is 11 (the list and 10 scalars), lolN = 1 + 10 * size(lolN-1)
    size, total, crossing = 11, 0, None
    for level in range(1, 9):
        for k in range(1, 11):
            total += size
            if total > yamlsource.ALIAS_BUDGET:
                crossing = (level, k)
                break
        if crossing:
            break
        size = 1 + 10 * size
    assert crossing is not None
    level, k = crossing
    text = laughs()
    p = the_problem(text)
    assert (p.line, p.col) == at(text, f"*lol{level - 1}", k)


def test_a_file_just_under_the_budget_loads() -> None:
    # 6 levels: 1 + 10 + ... aliases that expand to 11 + 111 * 10 + ... < ALIAS_BUDGET nodes
    assert parse(laughs(levels=6), F).data["lol5"][9][9][9][9][9][9] == "lol"


def test_aliases_inside_the_budget_still_share_values() -> None:
    d = parse("a: &x {b: [1, 2]}\nc: *x\nd: [*x, *x]\n", F).data
    assert d["c"] is d["a"] and d["d"][1] is d["a"]


def test_a_recursive_alias_is_refused_at_the_alias() -> None:
    # it used to build a list that contains itself: RecursionError in the schema check
    text = vs_text("    scheduler_flags: &flags [sh-port, *flags]\n")
    p = the_problem(text)
    assert (p.line, p.col) == at(text, "*flags")
    assert "*flags is inside the node it names" in p.message


def test_a_duplicate_anchor_is_refused_at_the_second_one() -> None:
    text = "a: &x 1\nb: &x 2\nc: *x\n"
    p = the_problem(text)
    assert (p.line, p.col) == (2, 4)
    assert p.message == "anchor &x is already defined on line 1; give each anchor its own name"


# ---------------------------------------------------------------- large valid files


def big_config(services: int = 10_000, reals: int = 10) -> str:
    out = ["virtual_servers:"]
    for i in range(services):
        out.append(f"  - address: 198.18.{i >> 8}.{i & 255}\n    port: 80\n    reals:")
        for j in range(reals):
            n = i * reals + j
            real = f"address: 198.19.{n >> 8 & 255}.{n & 255}, port: {8000 + (n >> 16)}, weight: {j + 1}"
            out.append(f"      - {{{real}}}")
    return "\n".join(out) + "\n"


def test_ten_thousand_by_ten_loads() -> None:
    config = load_text(big_config(), F)
    assert len(config.virtual_servers) == 10_000
    assert sum(len(v.reals) for v in config.virtual_servers) == 100_000


def test_ten_thousand_by_ten_with_every_real_and_check_aliased_stays_inside_the_budget() -> None:
    # The most alias-heavy sensible 10,000 x 10 file: each server takes a shared pool
    # of 10 reals, each real a shared health check. It expands to its written-out size.
    pool = ", ".join(f"{{address: 198.19.0.{j + 1}, weight: {j + 1}, health_check: *hc}}" for j in range(10))
    lines = [
        "virtual_servers:",
        "  - address: 198.18.0.0",
        "    port: 80",
        "    health_check: &hc {type: http, interval: 2s, timeout: 1s, rise: 2, fall: 3,",
        "                       http: {path: /healthz, status: [200, 204, 301], host: www.example}}",
        f"    reals: &pool [{pool}]",
    ]
    for i in range(1, 10_000):
        lines.append(f"  - {{address: 198.18.{i >> 8}.{i & 255}, port: 80, health_check: *hc, reals: *pool}}")
    doc = parse("\n".join(lines) + "\n", F)
    servers = doc.data["virtual_servers"]
    assert len(servers) == 10_000 and servers[-1]["reals"] is servers[0]["reals"]


# ---------------------------------------------------------------- YAML 1.1 numbers and booleans


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("port", "0443", "0443 is octal in YAML 1.1 (= 291); write 443, or quote it"),
        ("weight", "010", "010 is octal in YAML 1.1 (= 8); write 10, or quote it"),
        ("weight", "-07", "-07 is octal in YAML 1.1 (= -7); write -7, or quote it"),
        ("weight", "+0_10", "+0_10 is octal in YAML 1.1 (= 8); write 10, or quote it"),
    ],
)
def test_a_leading_zero_integer_is_refused(field: str, value: str, message: str) -> None:
    text = vs_text(f"    reals:\n      - address: 198.18.1.1\n        {field}: {value}\n")
    p = the_problem(text)
    assert (p.line, p.col) == value_at(text, field, value)
    assert p.message == message


def test_a_leading_zero_key_is_refused_too() -> None:
    with pytest.raises(ConfigError) as e:
        parse("env: {010: x}\n", F)
    assert [str(p) for p in e.value.problems] == [
        f"{F}:1:7: 010 is octal in YAML 1.1 (= 8); write 10, or quote it"
    ]


def test_a_huge_leading_zero_integer_is_reported_briefly() -> None:
    value = "0" + "7" * 5000
    (p,) = problems(vs_text(f"    weight: {value}\n"))
    assert len(p.message) < 200 and "octal in YAML 1.1" in p.message


@pytest.mark.parametrize(
    ("value", "yaml11"), [("1:20", "80"), ("-1:20", "-80"), ("1:20:30", "4830"), ("1:20.5", "80.5")]
)
def test_a_base_60_number_is_text_and_refused_where_a_number_belongs(value: str, yaml11: str) -> None:
    assert parse(f"a: {value}\n", F).data == {"a": value}
    text = vs_text(f"    reals:\n      - address: 198.18.1.1\n        weight: {value}\n")
    p = the_problem(text)
    assert (p.line, p.col) == at(text, value)
    assert f"{value} is text here, as in YAML 1.2 (YAML 1.1 reads it as the base-60 number {yaml11})" in (
        p.message
    ), p


def test_base_60_shaped_text_is_read_as_written() -> None:
    # BGP communities and a full-form IPv6 address look like base-60 numbers to YAML 1.1
    cfg = load_text(
        "virtual_servers:\n"
        "  - {address: 2001:1:2:3:4:5:6:7, port: 80, reals: [{address: 2001:1:2:3:4:5:6:8}]}\n",
        F,
    )
    assert cfg.virtual_servers[0].address == "2001:1:2:3:4:5:6:7"
    assert parse("communities: [65000:10, 1:2:3]\n", F).data == {"communities": ["65000:10", "1:2:3"]}


WORDS = ["yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF", "y", "Y", "n", "N"]


@pytest.mark.parametrize("word", WORDS)
def test_a_yaml_1_1_boolean_word_is_refused_where_a_boolean_belongs(word: str) -> None:
    text = vs_text(f"    one_packet: {word}\n")
    p = the_problem(text)
    assert (p.line, p.col) == value_at(text, "one_packet", word)
    assert p.message.endswith("for a boolean write true or false"), p
    meaning = "true" if word[0] in "yYoO" and word.lower() != "off" else "false"
    assert f"{word} is text here, as in YAML 1.2 (YAML 1.1 reads it as {meaning})" in p.message, p


def test_a_yaml_1_1_boolean_word_is_text_where_text_belongs() -> None:
    cfg = load_text(
        vs_text(
            "    health_check:\n"
            "      type: script\n"
            "      script: {argv: [/usr/lib/check, on], env: {VERBOSE: yes, DRY_RUN: no}}\n"
            "    reals: [{address: 198.18.1.1}]\n"
        ),
        F,
    )
    hc = cfg.virtual_servers[0].reals[0].health  # the server's check, given to each real
    assert hc is not None
    assert hc.checker.argv == ("/usr/lib/check", "on")  # type: ignore[attr-defined]
    assert dict(hc.checker.env) == {"VERBOSE": "yes", "DRY_RUN": "no"}  # type: ignore[attr-defined]


def test_true_and_false_stay_booleans_and_quoted_scalars_stay_text() -> None:
    d = parse("a: [true, false, True, FALSE]\nb: ['yes', \"0443\", '1:20', \"on\"]\non: 1\nyes: 2\n", F).data
    assert d == {"a": [True, False, True, False], "b": ["yes", "0443", "1:20", "on"], "on": 1, "yes": 2}


def test_an_aliased_boolean_word_is_explained_at_the_alias() -> None:
    text = "virtual_servers:\n  - {address: 198.18.0.1, port: 80, name: &w on}\n  - {address: 198.18.0.2, port: 80, one_packet: *w}\n"  # noqa: E501
    p = the_problem(text)
    assert (p.line, p.col) == at(text, "*w")
    assert p.message.endswith("for a boolean write true or false"), p


def test_the_explanation_is_not_added_to_problems_about_keys() -> None:
    (p,) = problems(vs_text("    colour: yes\n"))
    assert "YAML 1.1" not in p.message


@pytest.mark.parametrize(
    "value",
    ["0x" + "f" * 5000, "0b" + "1" * 20_000, "!!int 0x" + "f" * 5000],
    ids=["hex", "binary", "tagged"],
)
def test_a_huge_hex_or_binary_integer_is_refused_in_the_reader(value: str) -> None:
    # it used to reach the schema check, whose message printed it: ValueError past 4,300 digits
    text = vs_text(f"    weight: {value}\n")
    p = the_problem(text)
    assert (p.line, p.col) == value_at(text, "weight", value)
    assert p.message.endswith("-bit number; no setting takes one that large") and len(p.message) < 150, p


def test_large_but_sane_integers_still_read() -> None:
    assert parse("a: 0xffffffffffffffff\nb: 18446744073709551616\n", F).data == {"a": 2**64 - 1, "b": 2**64}


# ---------------------------------------------------------------- values quoted in messages


def test_quote_keeps_short_values_whole() -> None:
    assert errors.quote("web") == "'web'"
    assert errors.quote(80) == "80"
    assert errors.quote([1, "a"]) == "[1, 'a']"


def test_quote_cuts_long_values_with_an_ellipsis() -> None:
    q = errors.quote("x" * 10_000)
    assert q.startswith("'xxxx") and q.endswith("...'") and len(q) <= 85
    q = errors.quote(list(range(10_000)))
    assert q.startswith("[0, 1, 2") and "..." in q and len(q) <= 85
    q = errors.quote(10**5000)  # str() of an int raises past 4300 digits
    assert len(q) <= 85


def test_quote_is_fast_on_expanded_and_recursive_values() -> None:
    level: list[object] = ["lol"] * 10
    for _ in range(9):
        level = [level] * 10  # 10**10 leaves if written out
    loop: list[object] = [1]
    loop.append(loop)
    t0 = time.perf_counter()
    assert len(errors.quote(level)) <= 85 and len(errors.quote(loop)) <= 85
    assert len(errors.quote({"k" * 500: level})) <= 85
    assert time.perf_counter() - t0 < 0.1


LONG = "v" * 3000


@pytest.mark.parametrize(
    "text",
    [
        f"a: !foo {LONG}\n",
        f"a: !!int {LONG}\n",
        f"? {LONG}\n: 1\n? {LONG}\n: 2\n",
        f"a: *{LONG}\n",
        f"a: &{LONG} 1\nb: &{LONG} 2\n",
        f"a: &{LONG} [*{LONG}]\n",
        f"a: !{LONG} x\n",
    ],
    ids=[
        "unknown-tag",
        "bad-int",
        "duplicate-key",
        "unknown-alias",
        "duplicate-anchor",
        "recursive",
        "long-tag",
    ],
)
def test_reader_messages_quote_at_most_80_characters_of_a_value(text: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text, F)
    for p in e.value.problems:
        assert len(p.message) < 250, p.message
        assert "vvvv..." in p.message, p.message


# ---------------------------------------------------------------- the corpus: one file per kind of problem

EXPECT = re.compile(r"# expect: (\d+):(\d+): (.+)")


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.yaml")), ids=lambda p: p.stem)
def test_corpus(path: Path) -> None:
    # the comments at the top: one or more '# expect:' lines, each a problem that must be found,
    # and '# and nothing else' when no other problem may be reported
    text = path.read_text()
    head = [line for line in text.split("\n")[:20] if line.startswith("#")]
    expected = [m for m in map(EXPECT.match, head) if m]
    assert EXPECT.match(text), f"{path.name} starts with no '# expect: LINE:COL: message' line"
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        load_text(text, path.name)
    assert time.perf_counter() - t0 < 1.0
    shown = "\n".join(map(str, e.value.problems))
    for m in expected:
        line, col, fragment = int(m[1]), int(m[2]), m[3]
        found = [p for p in e.value.problems if (p.line, p.col) == (line, col)]
        assert any(fragment in p.message for p in found), shown
    if "# and nothing else" in head:
        assert len(e.value.problems) == len(expected), shown
    assert all(len(p.message) < 250 for p in e.value.problems), shown


def test_the_corpus_has_a_file_per_kind_of_problem() -> None:
    assert len(list(CORPUS.glob("*.yaml"))) >= 12


def test_a_secret_too_long_is_not_echoed() -> None:
    """A BGP password over the limit: the error gives its length, never the value (not even 80 characters)."""
    secret = "hunter2-" * 20
    peer = f"{{address: 198.18.0.1, as: 2, local_address: 198.18.0.2, password: {secret}}}"
    text = f"bgp:\n  local_as: 1\n  router_id: 198.18.0.2\n  peers:\n    - {peer}\n"
    with pytest.raises(ConfigError) as e:
        load_text(text, "f.yaml")
    shown = "\n".join(map(str, e.value.problems))
    assert "160 characters, more than the 80 allowed here" in shown
    assert "hunter2" not in shown
