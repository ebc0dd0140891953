"""Questions about time ("around 20:30", "in the first minute", "at the end") as time ranges."""

from __future__ import annotations

import re

_CLOCK = r"(\d{1,2}(?::\d{2}){1,2}(?:\.\d+)?)"
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                 "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30}  # fmt: skip
_AMOUNT = r"(\d+(?:\.\d+)?|" + "|".join(_NUMBER_WORDS) + r")?\s*"
_UNIT = r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b"
_BETWEEN = re.compile(rf"\b(?:between|from)\s+{_CLOCK}\s+(?:and|to|-)\s+{_CLOCK}")
_AT_CLOCK = re.compile(rf"{_CLOCK}")
_FIRST = re.compile(rf"\b(?:first|opening)\s+{_AMOUNT}{_UNIT}")
_LAST = re.compile(rf"\b(?:last|final|closing)\s+{_AMOUNT}{_UNIT}")
_AFTER = re.compile(rf"\b(\d+(?:\.\d+)?)\s*{_UNIT}\s+in\b|\bafter\s+(\d+(?:\.\d+)?)\s*{_UNIT}")
_END = re.compile(r"\b(?:at|near|towards?|by)\s+the\s+(?:very\s+)?end\b|\bend of the video\b|\bending\b|\bfinally\b")
_START = re.compile(r"\b(?:at|near)\s+the\s+(?:very\s+)?(?:start|beginning)\b|\b(?:start|beginning) of the video\b")
_MIDDLE = re.compile(r"\b(?:in|around)\s+the\s+middle\b|\bhalfway\b")


def clock_seconds(text: str) -> float:
    """``"20:30"`` -> 1230.0; ``"1:02:03.5"`` -> 3723.5."""
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def _seconds(amount: str | None, unit: str) -> float:
    value = float(_NUMBER_WORDS.get(amount or "", amount or 1))
    return value * (3600 if unit.startswith("h") else 60 if unit.startswith("m") else 1)


def time_range(question: str, duration_s: float) -> tuple[float, float] | None:
    """The part of the video a question asks about, or None when it names no time."""
    text = question.lower()
    edge = max(30.0, 0.05 * duration_s)  # "the end", "the start": the last or first 5%, at least 30 s
    near = max(15.0, 0.01 * duration_s)  # "around 20:30": this much either side
    if match := _BETWEEN.search(text):
        start, end = sorted((clock_seconds(match.group(1)), clock_seconds(match.group(2))))
        return _clip(start, end, duration_s)
    if match := _FIRST.search(text):
        return _clip(0.0, _seconds(match.group(1), match.group(2)), duration_s)
    if match := _LAST.search(text):
        return _clip(duration_s - _seconds(match.group(1), match.group(2)), duration_s, duration_s)
    if match := _AT_CLOCK.search(text):
        moment = clock_seconds(match.group(1))
        return _clip(moment - near, moment + near, duration_s)
    if match := _AFTER.search(text):
        amount, unit = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
        moment = _seconds(amount, unit)
        return _clip(moment - near, moment + near, duration_s)
    if _END.search(text):
        return _clip(duration_s - edge, duration_s, duration_s)
    if _START.search(text):
        return _clip(0.0, edge, duration_s)
    if _MIDDLE.search(text):
        return _clip(duration_s / 2 - edge / 2, duration_s / 2 + edge / 2, duration_s)
    return None


def _clip(start: float, end: float, duration_s: float) -> tuple[float, float] | None:
    start, end = max(0.0, start), min(max(duration_s, 0.0), end)
    return (start, end) if end >= start else None
