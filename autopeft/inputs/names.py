"""What a study or sweep name may be: a name is a name, never a path.

A study lives in `<studies-dir>/<name>/` and is reported in `<reports-dir>/<name>/`, a sweep's
manifest in `<studies-dir>/<name>.sweep/`; so a name holding `../` or `/` would write outside
those folders. `check_name` accepts exactly `[A-Za-z0-9][A-Za-z0-9._-]*` without `..`, at most
`MAX_LENGTH` characters, and refuses anything else in one line naming the flag; `inside` is the
second line of defence wherever the tool joins a name it did not check to a folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from autopeft.errors import AutoPeftError

MAX_LENGTH = 200  # file systems allow 255 bytes per component; room for suffixes like ".sweep"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
RULE = (f"a name is letters, digits, '-', '_' and '.', starting with a letter or digit, "
        f"without '..', at most {MAX_LENGTH} characters")


def check_name(name: str, flag: str) -> str:
    """`name` when it is a usable study or sweep name, else an AutoPeftError naming `flag`."""
    reason = _problem(name)
    if reason is None:
        return name
    raise AutoPeftError(f"{flag} {_shown(name)} is not a usable name ({reason}); {RULE}")


def sanitise(text: str, fallback: str = "unnamed") -> str:
    """`text` made a usable name: unsafe runs become '-', '..' becomes '.', leading '.'/'-'/'_'
    dropped, cut to `MAX_LENGTH`; `fallback` when nothing is left."""
    name = _UNSAFE.sub("-", str(text))
    while ".." in name:
        name = name.replace("..", ".")
    name = name.lstrip(".-_")[:MAX_LENGTH] or fallback
    return check_name(name, "name")


def inside(root: str | Path, name: str) -> Path:
    """`root / name`, refused unless it is an entry directly inside `root`.

    Judged on the absolute path with `..` folded (not by following links, so a study folder
    the user linked to another disk stays usable): `a`, `a.b` pass; `..`, `../x`, `a/b`, `/x`
    and `''` do not.
    """
    base = os.path.normpath(os.path.abspath(root))
    text = str(name)
    joined = os.path.normpath(os.path.join(base, text))
    if not text or os.path.isabs(text) or os.path.dirname(joined) != base or joined == base:
        raise AutoPeftError(f"{_shown(name)} leads outside {root}/, not into it; {RULE}")
    return Path(root) / text


def _problem(name: object) -> str | None:
    if not isinstance(name, str):
        return f"not text but {type(name).__name__}"
    if not name.strip():
        return "it is empty"
    if len(name) > MAX_LENGTH:
        return f"it is {len(name)} characters long"
    if "/" in name or "\\" in name or Path(name).is_absolute():
        return "it holds a path separator; a name is not a path"
    if ".." in name:
        return "it holds '..'"
    if name[0] in ".-_":
        return f"it starts with '{name[0]}'"
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
    if bad:
        return "it holds " + ", ".join(repr(c) for c in bad)
    if not _NAME.fullmatch(name):  # the rule in one expression; the checks above say why
        return "it does not match [A-Za-z0-9][A-Za-z0-9._-]*"
    return None


def _shown(name: object) -> str:
    """The value as the message shows it: quoted, repr'd when it has odd characters, cut short."""
    text = str(name)
    cut = f"{text[:40]}..." if len(text) > 60 else text
    if isinstance(name, str) and cut.isascii() and cut.isprintable() and "'" not in cut:
        return f"'{cut}'"
    return repr(cut)
