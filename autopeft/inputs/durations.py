"""`--time-budget` values: "45m", "2h", "90s", "1h30m" or plain seconds ("600")."""

from __future__ import annotations

import math
import re

from autopeft.errors import AutoPeftError

ACCEPTED = "accepted: seconds (600) or hours/minutes/seconds such as 90s, 45m, 2h, 1h30m"
_NUMBER = r"(\d+(?:\.\d+)?)"
_PATTERN = re.compile(rf"(?:{_NUMBER}h)?(?:{_NUMBER}m)?(?:{_NUMBER}s)?")
_UNITS = (3600, 60, 1)


def parse_time_budget(text: str | None) -> float | None:
    """Seconds in `text` (None: no budget); a one-line `AutoPeftError` naming what is accepted
    if it is not a positive duration."""
    if text is None:
        return None
    spec = text.strip().lower()
    plain = re.fullmatch(_NUMBER, spec)
    match = plain or _PATTERN.fullmatch(spec)
    if not spec or match is None:
        raise AutoPeftError(f"invalid --time-budget '{text}'; {ACCEPTED}")
    if plain:
        seconds = float(spec)
    else:
        seconds = sum(float(part) * unit for part, unit in zip(match.groups(), _UNITS,
                                                                strict=True) if part)
    if not math.isfinite(seconds):  # hundreds of digits read as inf
        raise AutoPeftError(f"--time-budget '{text[:40]}...' is not a finite duration; "
                            f"{ACCEPTED}")
    if seconds <= 0:
        raise AutoPeftError(f"--time-budget '{text}' must be more than 0 seconds; {ACCEPTED}")
    return seconds
