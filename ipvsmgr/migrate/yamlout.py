"""A small block-style YAML writer that keeps comments: a mapping's "#" key (a string
or a list of them) is written as comment lines above it. Short lists and
mappings of scalars go on one line, the way the shipped examples are written."""

from __future__ import annotations

from typing import Any

import yaml

COMMENT = "#"
FLOW_WIDTH = 100


def scalar(value: Any) -> str:
    text: str = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
    text = text.strip()
    if text.endswith("\n..."):
        text = text[:-4].strip()
    return text.removesuffix("...").strip()


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _flow(v: Any) -> str | None:
    """One-line form of a list or mapping of scalars, if short enough."""
    if isinstance(v, list) and all(_is_scalar(x) for x in v):
        text = "[" + ", ".join(scalar(x) for x in v) + "]"
    elif isinstance(v, dict) and COMMENT not in v and all(_is_scalar(x) for x in v.values()):
        text = "{" + ", ".join(f"{scalar(k)}: {scalar(x)}" for k, x in v.items()) + "}"
    else:
        return None
    return text if len(text) <= FLOW_WIDTH else None


def _comments(v: Any, pad: str) -> list[str]:
    if not isinstance(v, dict) or COMMENT not in v:
        return []
    c = v[COMMENT]
    lines = [c] if isinstance(c, str) else list(c)
    return [f"{pad}# {line}".rstrip() for text in lines for line in text.split("\n")]


def _mapping(d: dict[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    for key, v in d.items():
        if key == COMMENT:
            continue
        k = scalar(key)
        flow = None if _is_scalar(v) else _flow(v)
        if _is_scalar(v):
            out.append(f"{pad}{k}: {scalar(v)}")
        elif flow is not None:
            out.extend(_comments(v, pad))
            out.append(f"{pad}{k}: {flow}")
        elif isinstance(v, dict):
            out.extend(_comments(v, pad))
            out.append(f"{pad}{k}:")
            out.extend(_mapping(v, indent + 2))
        else:
            out.append(f"{pad}{k}:")
            out.extend(_sequence(v, indent + 2))
    return out


def _sequence(items: list[Any], indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    for v in items:
        out.extend(_comments(v, pad))
        flow = None if _is_scalar(v) else _flow(v)
        if _is_scalar(v):
            out.append(f"{pad}- {scalar(v)}")
        elif flow is not None:
            out.append(f"{pad}- {flow}")
        elif isinstance(v, dict):
            inner = _mapping(v, indent + 2)
            if inner:
                out.append(f"{pad}- {inner[0].lstrip()}")
                out.extend(inner[1:])
            else:
                out.append(f"{pad}- {{}}")
        else:
            inner = _sequence(v, indent + 2)
            out.append(f"{pad}- {inner[0].lstrip()}" if inner else f"{pad}- []")
            out.extend(inner[1:])
    return out


def dump(doc: dict[str, Any], header: list[str] | None = None) -> str:
    lines = [f"# {h}".rstrip() for h in header or []]
    body = _mapping(doc, 0)
    return "\n".join(lines + body) + "\n"
