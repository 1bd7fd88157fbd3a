"""conf.d: virtual servers in files of their own, merged into the main file.

`/etc/ipvsmgr/conf.d/*.yaml` (the directory next to the main file), in
name order, each holding a `virtual_servers:` list that is appended to the
main file's. One checked configuration comes out, as from one file; every
problem keeps its own file, line and column: the merged document maps a
merged path (`virtual_servers[7]`) back to the file and the index it came
from. A fragment holds nothing but virtual servers: VRRP, BGP and the rest
stay in the main file, where one node's settings are seen at once.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ipvsmgr.config.errors import Path, Problem
from ipvsmgr.config.yamlsource import Document

DIRECTORY = "conf.d"
ALLOWED = ("virtual_servers",)


def fragment_paths(main: str) -> list[str]:
    """The fragments of the main file `main`, in the order they are merged."""
    return sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(main)), DIRECTORY, "*.yaml")))


@dataclass
class Merged:
    """The main document and its fragments as one (errors.Located)."""

    main: Document
    parts: list[Document]
    data: Any = None
    # merged index of virtual_servers -> (document, its own index)
    owners: list[tuple[Document, int]] = field(default_factory=list)

    def _where(self, path: Path) -> tuple[Document, Path]:
        p = tuple(path)
        if len(p) >= 2 and p[0] == "virtual_servers" and isinstance(p[1], int) and p[1] < len(self.owners):
            doc, i = self.owners[p[1]]
            return doc, ("virtual_servers", i, *p[2:])
        return self.main, p

    def prefetch(self, paths: Iterable[Path]) -> None:
        by_doc: dict[int, tuple[Document, list[Path]]] = {}
        for path in paths:
            doc, local = self._where(path)
            by_doc.setdefault(id(doc), (doc, []))[1].append(local)
        for doc, local_paths in by_doc.values():
            doc.prefetch(local_paths)

    def locate(self, path: Path, key: bool = False) -> tuple[int, int]:
        doc, local = self._where(path)
        return doc.locate(local, key)

    def problem(self, path: Path, message: str, key: bool = False) -> Problem:
        doc, local = self._where(path)
        return doc.problem(local, message, key)


def merge(main: Document, parts: list[Document]) -> tuple[Merged, list[Problem]]:
    """One document from the main one and its fragments, and the fragments' own problems
    (a fragment with anything but a list of virtual servers)."""
    problems: list[Problem] = []
    data = main.data if isinstance(main.data, dict) else main.data
    own = data.get("virtual_servers") if isinstance(data, dict) else None
    owners: list[tuple[Document, int]] = []
    servers: list[Any] = []
    if isinstance(own, list):
        servers.extend(own)
        owners.extend((main, i) for i in range(len(own)))
    taken = False
    for doc in parts:
        d = doc.data
        if d is None or d == {}:
            continue  # an empty fragment (a placeholder, or everything commented out)
        if not isinstance(d, dict):
            problems.append(doc.problem((), "a conf.d file holds a mapping with `virtual_servers:`"))
            continue
        for k in d:
            if k not in ALLOWED:
                problems.append(doc.problem((k,), f"a conf.d file holds only virtual_servers, not {k!r} "
                                            "(that belongs in the main file)", key=True))  # fmt: skip
        vs = d.get("virtual_servers")
        if vs is None:
            continue
        if not isinstance(vs, list):
            problems.append(doc.problem(("virtual_servers",), "virtual_servers is a list"))
            continue
        servers.extend(vs)
        owners.extend((doc, i) for i in range(len(vs)))
        taken = True
    if taken:
        if not isinstance(data, dict):
            data = {}
        elif own is not None and not isinstance(own, list):
            return Merged(main, parts, data, []), problems  # the main file's own list is wrong: said there
        data = {**data, "virtual_servers": servers}
    return Merged(main, parts, data, owners), problems
