"""A generated multiple-choice set whose answers are known: short videos of coloured shapes, counts
of squares, a number on screen and (with ``espeak-ng``) a spoken word, and their questions in the
layout Video-MME uses (``video``, ``question``, ``options``, ``answer``, ``task_type``) as JSON Lines.

``video eval-set DIR`` writes it; ``video eval DIR/qa.jsonl`` runs it (``video.evaluation``).
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson

SIZE = (320, 240)
FPS = 10
SCENE_S = 4.0  # three scenes: a shape, squares, a number
RATE = 16_000
COLOURS: dict[str, tuple[int, int, int]] = {  # BGR
    "red": (40, 40, 220),
    "green": (60, 180, 60),
    "blue": (220, 80, 40),
    "yellow": (40, 220, 230),
    "purple": (160, 50, 140),
    "orange": (30, 140, 250),
}
SHAPES = ("circle", "triangle", "square", "star")
WORDS = ("banana", "river", "window", "tiger", "pencil", "garden", "rocket", "candle")
LETTERS = "ABCD"


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    squares: int
    number: int
    word: str | None


def _draw_shape(image: np.ndarray, shape: str, colour: tuple[int, int, int]) -> None:
    cx, cy, r = SIZE[0] // 2, SIZE[1] // 2, 60
    if shape == "circle":
        cv2.circle(image, (cx, cy), r, colour, -1)
    elif shape == "square":
        cv2.rectangle(image, (cx - r, cy - r), (cx + r, cy + r), colour, -1)
    elif shape == "triangle":
        points = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(image, [points], colour)
    else:
        angles = np.linspace(-np.pi / 2, 3 * np.pi / 2, 11)[:-1]
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1).astype(np.int32)
        cv2.fillPoly(image, [points], colour)


def frame_at(scene: Scene, second: float) -> np.ndarray:
    """The picture at ``second``: the shape, then the squares, then the number."""
    image = np.full((SIZE[1], SIZE[0], 3), 245, np.uint8)
    if second < SCENE_S:
        _draw_shape(image, scene.shape, COLOURS[scene.colour])
    elif second < 2 * SCENE_S:
        side, gap = 36, 14
        width = scene.squares * side + (scene.squares - 1) * gap
        left = (SIZE[0] - width) // 2
        for n in range(scene.squares):
            x = left + n * (side + gap)
            cv2.rectangle(image, (x, 100), (x + side, 100 + side), (90, 90, 90), -1)
    else:
        text = str(scene.number)
        cv2.putText(image, text, (90, 160), cv2.FONT_HERSHEY_SIMPLEX, 3.0, (20, 20, 20), 6, cv2.LINE_AA)
    return image


def speech(text: str) -> np.ndarray | None:
    """``text`` spoken by espeak-ng as 16 kHz mono floats, or None when espeak-ng is not installed."""
    if shutil.which("espeak-ng") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "say.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)  # noqa: S603,S607
        with wave.open(io.BytesIO(path.read_bytes())) as reader:
            rate = reader.getframerate()
            samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").astype(np.float32) / 32768
    import soxr

    return np.asarray(soxr.resample(samples, rate, RATE), dtype=np.float32)


def write_video(path: Path, scene: Scene) -> None:
    """An MPEG-4 file of the three scenes, with the word spoken in the second when there is one."""
    import av

    duration = 3 * SCENE_S
    voice = speech(f"The secret word is {scene.word}.") if scene.word else None
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        video.bit_rate = 800_000
        audio = out.add_stream("aac", rate=RATE, layout="mono") if voice is not None else None
        for n in range(int(duration * FPS)):
            picture = av.VideoFrame.from_ndarray(frame_at(scene, n / FPS), format="bgr24")
            for packet in video.encode(picture):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if audio is not None and voice is not None:
            track = np.zeros(int(duration * RATE), np.float32)
            start = int((SCENE_S + 0.5) * RATE)
            piece = voice[: len(track) - start]
            track[start : start + len(piece)] = piece * 0.8
            for offset in range(0, len(track), 1024):
                chunk = track[offset : offset + 1024].reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = RATE, offset, Fraction(1, RATE)
                for packet in audio.encode(frame):
                    out.mux(packet)
            for packet in audio.encode(None):
                out.mux(packet)


def _choice(rng: random.Random, right: str, pool: list[str]) -> tuple[list[str], str]:
    wrong = rng.sample([p for p in pool if p != right], 3)
    options = [right, *wrong]
    rng.shuffle(options)
    letter = LETTERS[options.index(right)]
    return [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)], letter


def questions(name: str, scene: Scene, rng: random.Random) -> list[dict[str, Any]]:
    asked: list[tuple[str, str, list[str], str]] = [
        ("colour", f"What colour is the {scene.shape} at the start of the video?", list(COLOURS), scene.colour),
        ("shape", "Which shape is shown at the start of the video?", list(SHAPES), scene.shape),
        (
            "count",
            "How many squares are on screen in the middle of the video?",
            [str(n) for n in range(1, 7)],
            str(scene.squares),
        ),
        (
            "text",
            "What number is written on screen at the end of the video?",
            [str(n) for n in range(10, 100)],
            str(scene.number),
        ),
    ]
    if scene.word:
        asked.append(("speech", "What is the secret word said in the video?", list(WORDS), scene.word))
    rows = []
    for kind, question, pool, right in asked:
        options, letter = _choice(rng, right, pool)
        rows.append({"video": name, "question": question, "options": options, "answer": letter, "task_type": kind})
    return rows


def generate(folder: Path, videos: int = 6, seed: int = 0) -> Path:
    """Write ``videos`` videos and ``qa.jsonl`` into ``folder``; returns the QA file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    spoken = shutil.which("espeak-ng") is not None
    rows: list[dict[str, Any]] = []
    for n in range(videos):
        scene = Scene(
            rng.choice(SHAPES),
            rng.choice(list(COLOURS)),
            rng.randint(1, 6),
            rng.randint(10, 99),
            rng.choice(WORDS) if spoken else None,
        )
        name = f"synthetic-{n:02d}.mp4"
        write_video(folder / name, scene)
        rows += questions(name, scene, rng)
    qa = folder / "qa.jsonl"
    qa.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return qa
