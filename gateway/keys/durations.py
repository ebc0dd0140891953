"""LiteLLM's durations: ``30s``, ``15m``, ``12h``, ``30d``, ``1mo`` (30 days each), as seconds."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d{1,6})\s*(s|m|h|d|w|mo)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400}


def seconds(duration: str) -> int:
    """The length of ``duration``; ValueError naming the accepted forms for anything else."""
    match = _DURATION.match(duration)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"'{duration}' is not a duration: use a positive number and s, m, h, d, w or mo (e.g. 30d)")
    return int(match.group(1)) * _SECONDS[match.group(2)]
