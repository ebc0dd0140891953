"""``video eval``: QA files in Video-MME's and EgoSchema's layouts, how answers are scored, and a
run of the generated set against the service (the fake model always answers B: its accuracy is
the share of questions whose answer is B, which the run must report exactly)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import UpstreamFactory
from tests.video.conftest import ServiceFactory
from video.eval_set import Scene, frame_at, generate
from video.evaluation import EvalError, Item, chosen_letter, load

ROOT = Path(__file__).resolve().parents[2]


def _item(options: tuple[str, ...] = ("red", "blue", "green", "yellow")) -> Item:
    return Item(Path("v.mp4"), "What colour?", options, "B", "colour")


def test_answers_are_read_as_the_letter_they_choose() -> None:
    item = _item()
    assert chosen_letter("B. blue, at [00:01.0]", item) == "B"
    assert chosen_letter("The answer is (C) green.", item) == "C"
    assert chosen_letter("A person holds a blue cup, so D", item) == "D"  # "A person": the article
    assert chosen_letter("It is blue.", item) == "B"  # no letter: the one option it names
    assert chosen_letter("It is blue or green.", item) is None
    assert chosen_letter("I cannot tell.", item) is None


def test_qa_files_in_video_mme_and_egoschema_layouts(tmp_path: Path) -> None:
    (tmp_path / "clip1.mp4").write_bytes(b"")
    (tmp_path / "clip2.mkv").write_bytes(b"")
    mme = tmp_path / "mme.jsonl"
    mme.write_text(
        '{"videoID": "clip1", "question": "Q1?", "options": ["A. cat", "B. dog"], "answer": "B", "task_type": "OCR"}\n'
    )
    [one] = load(mme)
    assert (one.video.name, one.options, one.answer, one.kind) == ("clip1.mp4", ("cat", "dog"), "B", "OCR")
    ego = tmp_path / "ego.json"
    ego.write_bytes(
        orjson.dumps([{"q_uid": "clip2", "question": "Q2?", "option 0": "x", "option 1": "y", "answer": 1}])
    )
    [two] = load(ego)
    assert (two.video.name, two.options, two.answer, two.kind) == ("clip2.mkv", ("x", "y"), "B", "all")
    csv = tmp_path / "qa.csv"
    csv.write_text('video,question,options,answer\nclip1.mp4,Q3?,"red|green|blue",green\n')
    assert load(csv)[0].answer == "B"

    for text, message in [
        ('{"video": "clip1", "options": ["a", "b"], "answer": "A"}', "line 1: no 'question'"),
        ('{"video": "gone", "question": "q", "options": ["a", "b"], "answer": "A"}', "video 'gone' is not in"),
        ('{"video": "clip1", "question": "q", "options": ["a", "b"], "answer": "C"}', "is not one of the options"),
        ("not json", "line 1: not a JSON object"),
    ]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text + "\n")
        with pytest.raises(EvalError, match=message):
            load(bad)


def test_the_generated_scenes_show_what_their_answers_say() -> None:
    scene = Scene("circle", "red", 4, 57, None)
    start = frame_at(scene, 1.0)
    assert tuple(start[120, 160]) == (40, 40, 220)  # the red circle, in the middle (BGR)
    middle = frame_at(scene, 5.0)
    dark = (middle[118] < 128).all(axis=1)  # a row through the squares
    edges = (dark[1:] & ~dark[:-1]).sum() + int(dark[0])
    assert edges == 4


@pytest.mark.service
@pytest.mark.timeout(180)
async def test_eval_runs_the_generated_set_against_the_service(
    upstream: UpstreamFactory, video_service: ServiceFactory, tmp_path: Path
) -> None:
    qa = generate(tmp_path / "set", videos=2, seed=3)
    rows = [orjson.loads(line) for line in qa.read_text().splitlines()]
    assert {r["task_type"] for r in rows} >= {"colour", "shape", "count", "text"}
    gateway = await upstream("gateway", content="B")  # every answer picks B
    service = await video_service(gateway_url=gateway.url, look_frames=4)
    report = tmp_path / "answers.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "video", "eval", str(qa), "--url", service.url, "--output", str(report),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    table = out.decode()
    share = sum(r["answer"] == "B" for r in rows)
    expected = f"{100 * share / len(rows):.1f}% ({share}/{len(rows)})"
    overall = next(line for line in table.splitlines() if line.startswith("| all |"))
    assert overall.split(" | ")[2:4] == [expected, expected], table
    assert "2 video(s) processed" in table
    outcomes = orjson.loads(report.read_bytes())["outcomes"]
    assert len(outcomes) == 2 * len(rows)
    assert {o["look"] for o in outcomes} == {True, False}
    assert all(o["chosen"] == "B" and o["error"] is None and o["tokens"] > 0 for o in outcomes)
    # Looking again was asked for with each question, and the vision group was shown its frames.
    looks = [b for b in gateway.bodies if b["model"] == "vision" and "Question:" in str(b["messages"])]
    assert len(looks) == len(rows)

    missing = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "video", "eval", str(tmp_path / "nope.jsonl"), cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    _, err = await missing.communicate()
    assert missing.returncode == 2
    assert err.decode().startswith("error: ")
    assert "nope.jsonl: cannot be read" in err.decode()
