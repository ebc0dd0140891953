"""Accuracy on multiple-choice questions about videos, measured against a running video service.

The QA file is CSV or JSON Lines in the layouts Video-MME and EgoSchema use: a video (``video``,
``video_path``, ``videoID``, ``video_id`` or ``q_uid``: a path, or a name looked up as
``<name>.mp4|.mkv|.webm|.mov`` beside the file or in ``--videos``), a ``question``, its options
(``options``/``candidates``: a list, a JSON list or ``|``-separated, "A. ..." or plain; or
``option 0`` ... ``option 4``), the ``answer`` (a letter, an option's text or a 0-based index)
and optionally its type (``task_type``, ``question_type`` or ``type``).

Each video is uploaded once; each question is asked with and without looking again, and the
table gives accuracy by question type with tokens and seconds per question.
"""

from __future__ import annotations

import asyncio
import csv
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

LETTERS = "ABCDEFGH"
VIDEO_FIELDS = ("video", "video_path", "videoID", "video_id", "q_uid")
TYPE_FIELDS = ("task_type", "question_type", "type")
EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi")
_LABELLED = re.compile(r"^\s*\(?([A-H])[.):]\s*(.*)$", re.DOTALL)
_LETTER = re.compile(r"(?<![A-Za-z])([A-H])(?![A-Za-z])")


class EvalError(Exception):
    """A QA file or a run that cannot go on; the message names the file and line."""


@dataclass(frozen=True)
class Item:
    video: Path
    question: str
    options: tuple[str, ...]  # the options' texts, in letter order
    answer: str  # a letter
    kind: str


def load(path: Path, videos_dir: Path | None = None) -> list[Item]:
    """The items of a CSV or JSON Lines QA file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"{path}: cannot be read ({exc})") from None
    rows: Iterable[tuple[int, dict[str, Any]]]
    if path.suffix.lower() == ".csv":
        rows = ((n + 2, dict(row)) for n, row in enumerate(csv.DictReader(text.splitlines())))
    else:
        rows = _json_lines(path, text)
    items = [_item(path, line, row, videos_dir) for line, row in rows]
    if not items:
        raise EvalError(f"{path}: no questions")
    return items


def _json_lines(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    stripped = text.strip()
    if stripped.startswith("["):  # one JSON array (EgoSchema's and Video-MME's own files)
        try:
            data = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise EvalError(f"{path}: not valid JSON ({exc})") from None
        return [(n + 1, row) for n, row in enumerate(data) if isinstance(row, dict)]
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise EvalError(f"{path} line {n}: not a JSON object") from None
        if not isinstance(row, dict):
            raise EvalError(f"{path} line {n}: not a JSON object")
        rows.append((n, row))
    return rows


def _item(path: Path, line: int, row: dict[str, Any], videos_dir: Path | None) -> Item:
    where = f"{path} line {line}"
    name = next((str(row[f]) for f in VIDEO_FIELDS if row.get(f)), None)
    if name is None:
        raise EvalError(f"{where}: no video ({' or '.join(VIDEO_FIELDS)})")
    question = str(row.get("question") or "").strip()
    if not question:
        raise EvalError(f"{where}: no 'question'")
    options = _options(row)
    if len(options) < 2 or len(options) > len(LETTERS):
        raise EvalError(f"{where}: needs 2 to {len(LETTERS)} options, has {len(options)}")
    answer = _answer(row.get("answer"), options)
    if answer is None:
        raise EvalError(f"{where}: 'answer' {row.get('answer')!r} is not one of the options' letters")
    kind = next((str(row[f]) for f in TYPE_FIELDS if row.get(f)), "all")
    return Item(_video(path, name, videos_dir, where), question, tuple(options), answer, kind)


def _options(row: dict[str, Any]) -> list[str]:
    raw = row.get("options", row.get("candidates"))
    if raw is None:
        numbered = sorted((k for k in row if re.fullmatch(r"option[ _]?\d", k)), key=lambda k: int(k[-1]))
        raw = [row[k] for k in numbered]
    if isinstance(raw, str):
        try:
            parsed = orjson.loads(raw)
            raw = parsed if isinstance(parsed, list) else raw
        except orjson.JSONDecodeError:
            pass
    if isinstance(raw, str):
        raw = raw.split("|")
    texts = []
    for option in raw or []:
        labelled = _LABELLED.match(str(option))
        texts.append((labelled.group(2) if labelled else str(option)).strip())
    return texts


def _answer(raw: Any, options: list[str]) -> str | None:
    if isinstance(raw, int) and 0 <= raw < len(options):
        return LETTERS[raw]
    text = str(raw or "").strip()
    if text.isdigit() and 0 <= int(text) < len(options):
        return LETTERS[int(text)]
    labelled = _LABELLED.match(text)
    letter = (labelled.group(1) if labelled else text).upper()
    if len(letter) == 1 and letter in LETTERS[: len(options)]:
        return letter
    lowered = [o.lower() for o in options]
    return LETTERS[lowered.index(text.lower())] if text.lower() in lowered else None


def _video(path: Path, name: str, videos_dir: Path | None, where: str) -> Path:
    folders = [d for d in (videos_dir, path.parent) if d is not None]
    for folder in folders:
        candidate = folder / name
        if candidate.is_file():
            return candidate
        for extension in EXTENSIONS:
            if (folder / f"{name}{extension}").is_file():
                return folder / f"{name}{extension}"
    raise EvalError(f"{where}: video '{name}' is not in {' or '.join(str(d) for d in folders)}")


def prompt(item: Item) -> str:
    """The question as it is asked: its options lettered, and how to answer."""
    lines = [item.question, "Options:"] + [f"{LETTERS[n]}. {o}" for n, o in enumerate(item.options)]
    lines.append("Answer with the letter of the correct option first, then a short reason.")
    return "\n".join(lines)


def chosen_letter(answer: str, item: Item) -> str | None:
    """The option an answer picks: its first standalone letter, else the option whose text it names."""
    letters = LETTERS[: len(item.options)]
    for match in _LETTER.finditer(answer):
        if match.group(1) in letters and not (match.group(1) == "A" and _article(answer, match.start())):
            return match.group(1)
    lowered = answer.lower()
    named = [LETTERS[n] for n, o in enumerate(item.options) if o and re.search(rf"\b{re.escape(o.lower())}\b", lowered)]
    return named[0] if len(named) == 1 else None


def _article(text: str, at: int) -> bool:
    """Whether the ``A`` at ``at`` starts a sentence as the article ("A person ...")."""
    return text[at + 1 : at + 2] == " " and text[at + 2 : at + 3].islower()


@dataclass
class Outcome:
    item: Item
    look: bool
    chosen: str | None
    correct: bool
    tokens: int
    seconds: float
    error: str | None = None


@dataclass
class Report:
    processing_s: dict[str, float] = field(default_factory=dict)  # each video's upload-to-described time
    outcomes: list[Outcome] = field(default_factory=list)
    failed_videos: dict[str, str] = field(default_factory=dict)


class Runner:
    """Uploads the videos to the service and asks every question, a few at a time."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        fps: float = 1.0,
        concurrency: int = 4,
        timeout_s: float = 1800,
        progress: Callable[[str, int], None] | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=600)
        self.fps = fps
        self.limit = asyncio.Semaphore(concurrency)
        self.timeout_s = timeout_s
        self.progress = progress or (lambda _kind, _n: None)

    async def close(self) -> None:
        await self.http.aclose()

    async def run(self, items: list[Item], modes: tuple[bool, ...] = (True, False)) -> Report:
        report = Report()
        videos = sorted({item.video for item in items})
        sessions = dict(zip(videos, await asyncio.gather(*(self._process(v, report) for v in videos)), strict=True))
        asks = [(item, look) for item in items for look in modes]
        report.outcomes = list(
            await asyncio.gather(*(self._ask(item, look, sessions[item.video]) for item, look in asks))
        )
        return report

    async def _process(self, video: Path, report: Report) -> str | None:
        started = time.monotonic()
        async with self.limit:
            with video.open("rb") as handle:
                response = await self.http.post(
                    "/upload", files={"file": (video.name, handle)}, data={"fps": f"{self.fps:g}"}
                )
        if response.status_code != 200:
            report.failed_videos[video.name] = _error(response)
            self.progress("video", 1)
            return None
        session_id: str = response.json()["session_id"]
        try:
            async with asyncio.timeout(self.timeout_s):
                # The job's events end when it completes or fails.
                async with self.http.stream("GET", f"/sessions/{session_id}/events") as events:
                    async for _ in events.aiter_lines():
                        pass
        except TimeoutError:
            report.failed_videos[video.name] = f"not processed within {self.timeout_s:g}s"
        report.processing_s[video.name] = time.monotonic() - started
        self.progress("video", 1)
        status = (await self.http.get(f"/status/{session_id}")).json()
        if status.get("status") != "completed":
            report.failed_videos.setdefault(video.name, str(status.get("error") or status.get("status")))
            return None
        return session_id

    async def _ask(self, item: Item, look: bool, session_id: str | None) -> Outcome:
        if session_id is None:
            self.progress("question", 1)
            return Outcome(item, look, None, False, 0, 0.0, "the video could not be processed")
        async with self.limit:
            started = time.monotonic()
            response = await self.http.post(
                "/chat", json={"session_id": session_id, "question": prompt(item), "look": look}
            )
            seconds = time.monotonic() - started
        self.progress("question", 1)
        if response.status_code != 200:
            return Outcome(item, look, None, False, 0, seconds, _error(response))
        body = response.json()
        chosen = chosen_letter(str(body.get("answer", "")), item)
        tokens = int((body.get("usage") or {}).get("total_tokens", 0))
        return Outcome(item, look, chosen, chosen == item.answer, tokens, seconds)


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def table(report: Report) -> str:
    """Accuracy with and without looking again, by question type, with tokens and seconds per question."""
    kinds = sorted({o.item.kind for o in report.outcomes})
    rows = [
        "| type | questions | accuracy, looking again | accuracy, descriptions only "
        "| tokens/q (look / not) | s/q (look / not) |"
    ]
    rows.append("|---|---|---|---|---|---|")
    for kind in [*kinds, "all"] if len(kinds) > 1 else kinds:
        chosen = [o for o in report.outcomes if kind in ("all", o.item.kind)]
        looked = [o for o in chosen if o.look]
        plain = [o for o in chosen if not o.look]
        count = len(looked) or len(plain)
        rows.append(
            f"| {kind} | {count} | {_share(looked)} | {_share(plain)} | "
            f"{_mean(looked, 'tokens', '.0f')} / {_mean(plain, 'tokens', '.0f')} | "
            f"{_mean(looked, 'seconds', '.2f')} / {_mean(plain, 'seconds', '.2f')} |"
        )
    times = list(report.processing_s.values())
    summary = (
        f"\n{len(report.processing_s)} video(s) processed in {sum(times):.1f} s in all "
        f"({(sum(times) / len(times)) if times else 0:.1f} s each, uploaded together)"
    )
    errors = [o for o in report.outcomes if o.error]
    if errors:
        summary += f"; {len(errors)} question(s) failed, first: {errors[0].error}"
    if report.failed_videos:
        name, why = next(iter(report.failed_videos.items()))
        summary += f"; {len(report.failed_videos)} video(s) failed, first: {name}: {why}"
    return "\n".join(rows) + summary


def _share(outcomes: list[Outcome]) -> str:
    if not outcomes:
        return "-"
    right = sum(o.correct for o in outcomes)
    return f"{100 * right / len(outcomes):.1f}% ({right}/{len(outcomes)})"


def _mean(outcomes: list[Outcome], name: str, spec: str) -> str:
    if not outcomes:
        return "-"
    return format(sum(getattr(o, name) for o in outcomes) / len(outcomes), spec)


def as_json(report: Report) -> bytes:
    return orjson.dumps(
        {
            "processing_s": report.processing_s,
            "failed_videos": report.failed_videos,
            "outcomes": [
                {
                    "video": o.item.video.name,
                    "question": o.item.question,
                    "type": o.item.kind,
                    "answer": o.item.answer,
                    "look": o.look,
                    "chosen": o.chosen,
                    "correct": o.correct,
                    "tokens": o.tokens,
                    "seconds": round(o.seconds, 3),
                    "error": o.error,
                }
                for o in report.outcomes
            ],
        },
        option=orjson.OPT_INDENT_2,
    )
