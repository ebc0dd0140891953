"""The web page in a real headless Chromium, against the service on loopback with a fake gateway."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Page, expect

from tests.fakes import Behaviour, FakeUpstream, free_socket
from tests.video.conftest import Soundtracks, Videos
from video.api import create_app
from video.settings import VideoSettings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

pytestmark = [
    pytest.mark.system,
    pytest.mark.browser,
    pytest.mark.timeout(180),
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it where it can)"),
]


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    """Debian's Chromium: no browser download is possible here."""
    return {
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture
def service_url(tmp_path: Path) -> Iterator[str]:
    """The video service and a fake gateway, served from a thread with its own event loop."""
    sock = free_socket()
    host, port = sock.getsockname()[:2]
    started = threading.Event()
    holder: dict[str, uvicorn.Server] = {}

    async def run() -> None:
        heard = "The deadline is on Friday.|Open the red box now."
        fake = await FakeUpstream(
            "gateway", Behaviour(echo_prompt=True, delay_s=0.15, chunk_delay_s=0.01, heard=heard)
        ).start()
        settings = VideoSettings(
            _env_file=None,  # type: ignore[call-arg]
            gateway_url=fake.url,
            data_dir=tmp_path / "data",
            max_retries=0,
            summary_batch_size=3,
            max_concurrency=2,
            transcription_model="speech",
        )
        server = uvicorn.Server(uvicorn.Config(create_app(settings), log_config=None, access_log=False))
        holder["server"] = server
        started.set()
        try:
            await server.serve(sockets=[sock])
        finally:
            await fake.stop()

    thread = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
    thread.start()
    started.wait(30)
    yield f"http://{host}:{port}"
    holder["server"].should_exit = True
    thread.join(30)


def test_upload_progress_timeline_chat_and_delete(page: Page, service_url: str, videos: Videos) -> None:
    page.goto(service_url)
    expect(page.get_by_role("heading", name="Video analysis")).to_be_visible()
    page.set_input_files("#file", str(videos.h264_mp4))
    expect(page.locator("#file-name")).to_contain_text("h264.mp4")
    page.get_by_label("Frames per second").fill("1")
    page.get_by_role("button", name="Analyse").click()

    expect(page.locator("#job-text")).to_contain_text("completed: 5 of 5 frames described (100%)", timeout=60_000)
    expect(page.locator("#job-progress")).to_have_attribute("value", "100")
    frames = page.locator("#timeline .frame")
    expect(frames).to_have_count(5)
    expect(page.locator("#timeline .frame.pending")).to_have_count(0)
    for index, stamp in enumerate(["00:00.0", "00:01.0", "00:02.0", "00:03.0", "00:04.0"]):
        card = page.locator(f"#frame-{index}")
        expect(card.locator("time")).to_have_text(stamp)
        expect(card.locator("p")).to_contain_text(f"Timestamp: {stamp}")
        expect(card.locator("img")).to_have_attribute("src", re.compile(r"^blob:"))
    expect(page.locator("#summaries li")).to_have_count(2)
    expect(page.locator("#summaries li").first).to_contain_text("00:00.0-00:02.0")

    page.locator("#frame-3 button").click()
    expect(page.locator("#viewer")).to_be_visible()
    expect(page.locator("#viewer-title")).to_have_text("Frame at 00:03.0")
    page.keyboard.press("Escape")
    expect(page.locator("#viewer")).to_be_hidden()

    page.get_by_label("Question").fill("What happens at 00:02?")
    page.get_by_role("button", name="Ask").click()
    answer = page.locator("#answers article").first
    # The answer appears as it is written (Server-Sent Events), before it is complete.
    expect(answer.locator(".answer[aria-busy='true']")).to_contain_text("gateway saw:", timeout=30_000)
    expect(answer.locator(".note").first).to_contain_text("Based on 5 frame descriptions", timeout=30_000)
    expect(answer.locator(".note").first).to_contain_text("100% processed")
    expect(answer.locator(".note").first).to_contain_text("looked again at")
    citation = answer.locator("a.cite", has_text="[00:02.0]").first
    citation.click()
    expect(page.locator("#frame-2")).to_have_class(re.compile("highlight"))

    # A follow-up joins the conversation, which the page keeps for the session across a reload.
    page.get_by_label("Question").fill("And after that?")
    page.get_by_role("button", name="Ask").click()
    expect(page.locator("#answers article").nth(1).locator(".note").first).to_contain_text("Based on", timeout=30_000)
    page.reload()
    expect(page.locator("#answers article")).to_have_count(2, timeout=10_000)
    expect(page.locator("#answers article .question").nth(1)).to_have_text("And after that?")
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator("#answers article")).to_have_count(0)
    page.reload()
    expect(page.locator("#timeline .frame")).to_have_count(5, timeout=10_000)

    page.get_by_label("Search the descriptions of every video").fill("timestamp 00:03")
    page.get_by_role("button", name="Search").click()
    first = page.locator("#search-results .result").first
    expect(first).to_contain_text("h264.mp4 · 00:03.0", timeout=10_000)
    expect(first.locator("img")).to_have_attribute("src", re.compile(r"^blob:"))
    first.click()
    expect(page.locator("#frame-3")).to_have_class(re.compile("highlight"))

    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=str(ARTIFACTS / "video-page.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(ARTIFACTS / "video-page-phone.png"), full_page=True)

    expect(page.locator("#sessions li")).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete h264.mp4").click()
    expect(page.locator("#sessions")).to_contain_text("None yet.")
    expect(page.locator("#session")).to_be_hidden()


def test_a_rejected_file_shows_the_server_message(page: Page, service_url: str, videos: Videos) -> None:
    page.goto(service_url)
    page.set_input_files("#file", str(videos.not_a_video))
    page.get_by_role("button", name="Analyse").click()
    error = page.locator("#upload-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("notes.mp4: the file cannot be opened as a video")
    assert os.path.exists(str(videos.not_a_video))


def test_the_transcript_beside_the_timeline_opens_its_moments(
    page: Page, service_url: str, soundtracks: Soundtracks
) -> None:
    page.goto(service_url)
    page.set_input_files("#file", str(soundtracks.speech_mp4))
    page.get_by_label("Frames per second").fill("1")
    page.get_by_role("button", name="Analyse").click()
    expect(page.locator("#job-text")).to_contain_text("completed: 12 of 12 frames described", timeout=60_000)
    lines = page.locator("#transcript li")
    expect(lines).to_have_count(2, timeout=10_000)
    expect(lines.first).to_contain_text("00:01")
    expect(lines.first).to_contain_text("The deadline is on Friday.")
    page.get_by_role("button", name=re.compile("Open the red box now")).click()
    expect(page.locator("#frame-7")).to_have_class(re.compile("highlight"))
    page.get_by_label("Search the descriptions of every video").fill("deadline")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#search-results .result").first).to_contain_text("speech.mp4 · 00:01", timeout=10_000)
    expect(page.locator("#search-results .result").first).to_contain_text("said")
