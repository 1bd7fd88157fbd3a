"""ipvsmgr.yaml(5) from the JSON Schema: the schema is the contract, the manual follows it.

python3 scripts/manpage.py ipvsmgr.yaml > ipvsmgr.yaml.5
"""

from __future__ import annotations

import sys
from typing import Any

from ipvsmgr import __version__
from ipvsmgr.config.schema import schema

MAX_DEPTH = 3


def esc(text: str) -> str:
    """Roff-safe text: backslashes doubled, a leading dot or quote guarded."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.splitlines())


def resolve(node: dict[str, Any], defs: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The node behind a $ref (merged with the referring node's own words) and the ref's name."""
    ref = node.get("$ref", "")
    if not ref:
        return node, ""
    name = ref.rsplit("/", 1)[-1]
    target = dict(defs[name])
    target.update({k: v for k, v in node.items() if k != "$ref"})
    return target, name


def type_of(node: dict[str, Any], defs: dict[str, Any]) -> str:
    node, name = resolve(node, defs)
    if name in ("duration", "ip_address", "ip_interface", "port", "weight", "argv"):
        return {"ip_interface": "address[/prefix]", "ip_address": "address"}.get(name, name)
    if "enum" in node:
        return " | ".join(str(v) for v in node["enum"])
    if "anyOf" in node:
        return " or ".join(type_of(n, defs) for n in node["anyOf"])
    t = node.get("type", "")
    if isinstance(t, list):
        t = " or ".join(x for x in t if x != "null")
    if t == "array":
        return f"list of {type_of(node.get('items', {}), defs)}"
    if t == "object" and "properties" in node:
        return "mapping"
    return str(t or "value")


def describe(key: str, node: dict[str, Any], defs: dict[str, Any], depth: int, out: list[str]) -> None:
    label = type_of(node, defs)
    node, _ = resolve(node, defs)
    out.append(".TP")
    out.append(f".B {esc(key)}\n({esc(label)})")
    out.append(esc(node.get("description", "")) or "\\&")
    props = node.get("properties")
    if props is None and node.get("type") == "array":
        item, _ = resolve(node.get("items", {}), defs)
        props = item.get("properties")
    if props is None and "anyOf" in node:
        for alt in node["anyOf"]:
            alt, _ = resolve(alt, defs)
            props = props or alt.get("properties")
    if props and depth < MAX_DEPTH:
        out.append(".RS")
        required = set(node.get("required", ()))
        for k, v in props.items():
            describe(k + (" (required)" if k in required else ""), v, defs, depth + 1, out)
        out.append(".RE")


def yaml_manual() -> str:
    s = schema()
    defs = s["$defs"]
    out = [
        f'.TH IPVSMGR.YAML 5 "" "ipvsmgr {__version__}" "File Formats"',
        ".SH NAME",
        "ipvsmgr.yaml \\- the ipvsmgr load balancer configuration",
        ".SH SYNOPSIS",
        ".B /etc/ipvsmgr/ipvsmgr.yaml",
        ".SH DESCRIPTION",
        esc(s.get("description", "")),
        ".PP",
        esc(
            "The file is YAML. `ipvsmgr check` validates it and prints every problem as "
            "FILE:LINE:COL; nothing is applied from a file with a problem. Durations are "
            "a number of seconds or a number with a unit: 100ms, 2s, 1.5m, 1h. This "
            "reference is generated from the JSON Schema that `ipvsmgr schema` prints "
            "(also /usr/share/ipvsmgr/ipvsmgr.schema.json)."
        ),
        ".SH KEYS",
    ]
    for key, node in s["properties"].items():
        describe(key, node, defs, 0, out)
    out += [
        ".SH EXAMPLES",
        "/usr/share/doc/ipvsmgr/examples/ holds complete files: all-methods.yaml (every forwarding "
        "method), health.yaml, vrrp.yaml, bgp\\-ecmp.yaml, xdp\\-guard.yaml.",
        ".SH SEE ALSO",
        ".BR ipvsmgr (8)",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    if sys.argv[1:] != ["ipvsmgr.yaml"]:
        sys.exit("usage: manpage.py ipvsmgr.yaml")
    sys.stdout.write(yaml_manual())


if __name__ == "__main__":
    main()
