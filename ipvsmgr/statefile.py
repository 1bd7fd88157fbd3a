"""Reading and writing the daemon's own files in its state directory, safely.

The state directory (/var/lib/ipvsmgr) holds what the daemon must find again
after a restart: state.json (what it owns, what it drains) and
overrides.json (the operator's run-time decisions). Whoever can write there
can steer the daemon, so the directory must belong to the daemon's user and
be writable by nobody else (`check_directory`), and a file found there is
read as hostile: not followed through a symbolic link, only if it is a
regular file (a FIFO would hang the start), at most MAX_BYTES, parsed
without letting deep nesting crash the process. Every problem is a
StateFileError with one line saying what is wrong.

Writes never go through a name someone else could have prepared: a fresh
temporary file made with O_EXCL (mkstemp) in the same directory, written,
fsynced, then renamed over the target (which replaces a symbolic link there
rather than writing through it), and the directory fsynced.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from typing import Any

MAX_BYTES = 4 << 20  # a state file with 10,000 drained reals is about 1 MiB
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
          stat.S_IFDIR: "a directory", stat.S_IFSOCK: "a socket"}  # fmt: skip


class StateFileError(Exception):
    """A state file or directory that cannot be used, with the reason in one line."""


def check_directory(path: str) -> None:
    """The state directory must be a directory of the daemon's user that only it may write.
    It is made (mode 0750) when missing."""
    try:
        os.makedirs(path, mode=0o750, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise StateFileError(f"state directory {path}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise StateFileError(f"state directory {path} is a symbolic link")
    if not stat.S_ISDIR(st.st_mode):
        raise StateFileError(f"state directory {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise StateFileError(
            f"state directory {path} belongs to uid {st.st_uid}, not to the daemon ({os.geteuid()})"
        )
    if st.st_mode & 0o022:
        who = (
            "group and others" if st.st_mode & 0o022 == 0o022 else "group" if st.st_mode & 0o020 else "others"
        )
        raise StateFileError(
            f"state directory {path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):o}): "
            "anyone who can write there steers the daemon; chmod go-w it"
        )


def read_json(path: str, limit: int = MAX_BYTES) -> Any:
    """The JSON in `path`, or None when there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == 40:  # ELOOP: O_NOFOLLOW met a symbolic link
            raise StateFileError(f"{path} is a symbolic link; not followed") from None
        raise StateFileError(f"{path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a file")
            raise StateFileError(f"{path} is {kind}, not a regular file")
        if st.st_size > limit:
            raise StateFileError(f"{path} is {st.st_size} bytes, more than the {limit} a state file may be")
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > limit:
            raise StateFileError(f"{path} is more than the {limit} bytes a state file may be")
    except OSError as e:
        raise StateFileError(f"{path}: {e.strerror}") from None
    finally:
        os.close(fd)
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise StateFileError(f"{path} is nested too deeply to be a state file") from None
    except UnicodeDecodeError as e:
        raise StateFileError(f"{path} is not UTF-8 (byte {e.start})") from None
    except ValueError as e:
        raise StateFileError(f"{path} is not JSON: {e}") from None


def write_json(path: str, raw: Any, mode: int = 0o640) -> None:
    """Write, fsync, rename over `path`, fsync the directory: a crash leaves the old file or the new one."""
    write_text(path, json.dumps(raw, indent=1), mode)


def write_text(path: str, text: str, mode: int = 0o640) -> None:
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def set_aside(path: str) -> str | None:
    """Rename an unusable file to `path.bad` (kept for the operator), so the
    next save does not overwrite the evidence; the new name, or None."""
    bad = path + ".bad"
    try:
        os.replace(path, bad)
    except OSError:
        return None
    return bad
