"""The soundtrack: windows cut at silences, transcribed through a fake gateway that speaks OpenAI's
``verbose_json``, stored with absolute times, served as a transcript, searched and used in chat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from openai import AsyncOpenAI

from tests.conftest import GatewayFactory, UpstreamFactory
from tests.video.conftest import ServiceFactory, Soundtracks, Videos
from tests.video.test_api import _events_until_done, _upload
from video.audio import SAMPLE_RATE, AudioDamage, pcm, windows
from video.jobs.speech import Soundtrack
from video.store import Session, SpeechSegment, SQLiteStore
from video.transcription import Transcriber, joined

pytestmark = pytest.mark.timeout(120)
SAID = "The deadline is on Friday.|Open the red box now."


def _signal(loud: list[tuple[float, float]], seconds: float) -> np.ndarray:
    noise = np.random.default_rng(1).uniform(-0.3, 0.3, int(seconds * SAMPLE_RATE)).astype(np.float32)
    signal = np.zeros_like(noise)
    for start, end in loud:
        signal[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)] = noise[
            int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)
        ]
    return signal


def _chunks(signal: np.ndarray, size: int = 1024) -> list[np.ndarray]:
    return [signal[i : i + size] for i in range(0, len(signal), size)]


@pytest.mark.unit
def test_windows_end_at_silences_without_overlap() -> None:
    signal = _signal([(0, 26), (27, 55), (55.5, 70)], 70)
    cut = list(windows(_chunks(signal), window_s=30))
    assert [w.index for w in cut] == [0, 1, 2]
    assert all(w.end_s - w.start_s <= 30 for w in cut)
    assert 26 <= cut[0].end_s <= 27
    assert 55 <= cut[1].end_s <= 55.5
    assert cut[1].start_s == cut[0].end_s  # cut at a silence: no overlap
    assert cut[2].start_s == cut[1].end_s
    assert cut[2].end_s == pytest.approx(70, abs=0.01)
    assert sum(len(w.samples) for w in cut) == len(signal)


@pytest.mark.unit
def test_windows_without_silence_overlap_and_each_keeps_its_own_speech() -> None:
    cut = list(windows(_chunks(_signal([(0, 70)], 70)), window_s=30))
    assert [(w.start_s, w.end_s) for w in cut] == [(0.0, 30.0), (29.0, 59.0), (58.0, 70.0)]
    assert [(w.keep_from_s, w.keep_until_s) for w in cut] == [(0.0, 29.5), (29.5, 58.5), (58.5, float("inf"))]


@pytest.mark.unit
def test_short_windows_that_start_in_silence_are_cut_near_their_end() -> None:
    cut = list(windows(_chunks(_signal([(1, 12)], 12)), window_s=5))
    assert len(cut) == 3  # not hundreds of slivers cut in the silence they start with
    assert all(w.end_s - w.start_s >= 3.75 for w in cut[:-1])


@pytest.mark.unit
def test_words_heard_twice_at_a_seam_are_dropped() -> None:
    segments = [SpeechSegment(27.0, 29.4, "we ship on the tenth of"), SpeechSegment(29.2, 31.0, "of May, says Ana")]
    assert [s.text for s in joined(segments)] == ["we ship on the tenth of", "May, says Ana"]
    assert [s.text for s in joined([SpeechSegment(0, 1, "hello"), SpeechSegment(5, 6, "hello")])] == ["hello", "hello"]


@pytest.mark.service
async def test_the_soundtrack_is_transcribed_searched_and_heard_in_chat(
    upstream: UpstreamFactory, video_service: ServiceFactory, soundtracks: Soundtracks
) -> None:
    gateway = await upstream("gateway", echo_prompt=True, heard=SAID)
    service = await video_service(gateway_url=gateway.url, transcription_model="speech")
    uploaded = await _upload(service, soundtracks.speech_mp4, fps="1")
    assert uploaded.status_code == 200, uploaded.text
    assert "soundtrack transcribed" in uploaded.json()["message"]
    session_id = uploaded.json()["session_id"]
    events = await _events_until_done(service, session_id)
    assert events[-1]["event"] == "completed", events[-1]
    status = (await service.http.get(f"/status/{session_id}")).json()
    assert status["audio"] == "done"
    assert status["transcribed_windows"] == 1
    assert status["failed_windows"] == 0
    assert status["speech_percentage"] == 100.0

    transcript = (await service.http.get(f"/sessions/{session_id}/transcript")).json()
    assert [s["text"] for s in transcript["segments"]] == SAID.split("|")
    starts = [s["start_s"] for s in transcript["segments"]]
    for heard, said in zip(starts, soundtracks.said, strict=True):
        assert said - 0.1 <= heard <= said + 0.5  # absolute times (the fake hears in 50 ms steps)
    vtt = await service.http.get(f"/sessions/{session_id}/transcript", params={"format": "vtt"})
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\n\n00:00:01.")
    assert "The deadline is on Friday." in vtt.text
    srt = await service.http.get(f"/sessions/{session_id}/transcript", params={"format": "srt"})
    assert srt.text.startswith("1\n00:00:01,")
    assert (await service.http.get(f"/sessions/{session_id}/transcript", params={"format": "doc"})).status_code == 400

    found = (await service.http.get("/search", params={"q": "deadline"})).json()["results"]
    assert found[0]["kind"] == "speech"
    assert found[0]["description"] == "The deadline is on Friday."
    assert found[0]["timestamp_s"] == starts[0]
    thumbnail = await service.http.get(found[0]["thumbnail_url"])
    assert thumbnail.status_code == 200

    answer = await service.http.post(
        "/chat", json={"session_id": session_id, "question": "What is said about the deadline?"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["speech_segments_in_context"] == 2
    prompt = gateway.bodies[-1]["messages"][-1]["content"]
    assert "(said) The deadline is on Friday." in prompt
    assert prompt.index("(said) The deadline") < prompt.index("(said) Open the red box")
    summaries = [b for b in gateway.bodies if "Summarise what happens" in str(b.get("messages", ""))]
    assert any("(said) Open the red box now." in str(b["messages"]) for b in summaries)
    metrics = (await service.http.get("/metrics")).text
    assert 'video_speech_windows_total{outcome="transcribed"} 1.0' in metrics


@pytest.mark.service
async def test_without_a_soundtrack_or_a_transcription_group_the_status_says_so(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos, soundtracks: Soundtracks
) -> None:
    gateway = await upstream("gateway", heard=SAID)
    transcribing = await video_service(gateway_url=gateway.url, transcription_model="speech")
    silent = (await _upload(transcribing, videos.h264_mp4, fps="1")).json()
    assert "no soundtrack" in silent["message"]
    assert (await _events_until_done(transcribing, silent["session_id"]))[-1]["event"] == "completed"
    assert (await transcribing.http.get(f"/status/{silent['session_id']}")).json()["audio"] == "none"

    deaf = await video_service(gateway_url=gateway.url, data_dir=transcribing.settings.data_dir.parent / "deaf")
    heard = (await _upload(deaf, soundtracks.speech_mp4, fps="1")).json()
    assert (await _events_until_done(deaf, heard["session_id"]))[-1]["event"] == "completed"
    assert (await deaf.http.get(f"/status/{heard['session_id']}")).json()["audio"] == "not transcribed"
    assert not any("audio/transcriptions" in str(h) for h in gateway.headers if "multipart" in str(h))
    transcript = (await deaf.http.get(f"/sessions/{heard['session_id']}/transcript")).json()
    assert transcript == {"session_id": heard["session_id"], "audio": "not transcribed", "segments": [], "failed": []}


@pytest.mark.service
async def test_an_undecodable_soundtrack_leaves_the_pictures_described_with_a_warning(
    upstream: UpstreamFactory, video_service: ServiceFactory, soundtracks: Soundtracks
) -> None:
    gateway = await upstream("gateway", heard=SAID)
    service = await video_service(gateway_url=gateway.url, transcription_model="speech")
    session_id = (await _upload(service, soundtracks.corrupt_audio_mkv, fps="1")).json()["session_id"]
    assert (await _events_until_done(service, session_id))[-1]["event"] == "completed"
    status = (await service.http.get(f"/status/{session_id}")).json()
    assert status["processed_frames"] == 5
    assert status["audio"] == "not transcribed"
    assert any("soundtrack could not be decoded" in w for w in status["warnings"])


@pytest.mark.unit
def test_damage_in_the_middle_is_silence_so_later_speech_keeps_its_time(soundtracks: Soundtracks) -> None:
    damage = AudioDamage()
    heard = np.concatenate(list(pcm(soundtracks.damaged_audio_mkv, damage)))
    assert len(heard) / SAMPLE_RATE == pytest.approx(6.0, abs=0.1)  # not 1.3 s short
    ((start, end),) = damage.gaps
    assert 1.7 <= start < end <= 3.3
    assert "soundtrack is damaged: 1." in (damage.warning() or "")
    loud = np.abs(heard[int(4.0 * SAMPLE_RATE) : int(5.0 * SAMPLE_RATE)]).max()
    assert loud > 0.2, "the tone after the damage is where it was"


@pytest.mark.service
async def test_a_damaged_soundtrack_is_transcribed_around_the_damage_with_a_warning(
    upstream: UpstreamFactory, video_service: ServiceFactory, soundtracks: Soundtracks
) -> None:
    gateway = await upstream("gateway", heard="a tone")
    service = await video_service(gateway_url=gateway.url, transcription_model="speech")
    session_id = (await _upload(service, soundtracks.damaged_audio_mkv, fps="1")).json()["session_id"]
    assert (await _events_until_done(service, session_id))[-1]["event"] == "completed"
    status = (await service.http.get(f"/status/{session_id}")).json()
    assert status["audio"] == "done"
    assert any("soundtrack is damaged" in w for w in status["warnings"]), status["warnings"]
    segments = (await service.http.get(f"/sessions/{session_id}/transcript")).json()["segments"]
    assert len(segments) == 2  # the tone before the damage and after it
    assert segments[1]["start_s"] >= 2.9


@pytest.mark.service
async def test_failed_transcription_never_fails_the_pictures_and_is_reported_per_window(
    upstream: UpstreamFactory, gateway: GatewayFactory, video_service: ServiceFactory, soundtracks: Soundtracks
) -> None:
    vision = await upstream("vision")
    speech = await upstream("speech", fail_status=400, fail_body=b'{"error": {"message": "audio is too long"}}')
    gw = await gateway(
        {
            "model_list": [
                {"model_name": "vision", "litellm_params": {"model": "hosted_vllm/v", "api_base": vision.url}},
                {"model_name": "chat", "litellm_params": {"model": "hosted_vllm/c", "api_base": vision.url}},
                {"model_name": "speech", "litellm_params": {"model": "hosted_vllm/w", "api_base": speech.url}},
            ]
        }
    )
    service = await video_service(gateway_url=f"{gw.url}/v1", transcription_model="speech", transcription_window_s=5)
    session_id = (await _upload(service, soundtracks.speech_mp4, fps="1")).json()["session_id"]
    assert (await _events_until_done(service, session_id))[-1]["event"] == "completed"
    status = (await service.http.get(f"/status/{session_id}")).json()
    assert status["processed_frames"] == 12
    assert status["failed_windows"] == len(speech.bodies) >= 3
    assert status["transcribed_windows"] == 0
    assert any("could not be transcribed" in w for w in status["warnings"])
    transcript = (await service.http.get(f"/sessions/{session_id}/transcript")).json()
    assert transcript["segments"] == []
    assert all("audio is too long" in gap["error"] for gap in transcript["failed"])
    assert transcript["failed"][0]["start_s"] == 0.0
    assert all(b["response_format"] == "verbose_json" and b["model"] == "w" for b in speech.bodies)


@pytest.mark.service
async def test_a_resumed_soundtrack_sends_only_the_windows_it_has_not_stored(
    upstream: UpstreamFactory, soundtracks: Soundtracks, tmp_path: Path
) -> None:
    fake = await upstream("speech", heard=SAID, fail_status=500, fail_every=2)
    store = SQLiteStore(tmp_path / "video.db")
    session = Session("s", None, "speech.mp4", str(soundtracks.speech_mp4), "processing", {}, None, 12.0, 12)
    store.create_session(session)
    async with AsyncOpenAI(base_url=fake.url, api_key="k", max_retries=0) as client:
        soundtrack = Soundtrack(store, Transcriber(client, "speech"), window_s=5, concurrency=1)
        first = await soundtrack.transcribe(session)
        windows_sent = len(fake.bodies)
        assert first.failed == windows_sent // 2 >= 1
        fake.behaviour.fail_status = None
        second = await soundtrack.transcribe(session)
        assert len(fake.bodies) == windows_sent + first.failed  # only the failed windows again
        assert second.failed == 0
        assert second.transcribed == windows_sent
        again = len(fake.bodies)
        await soundtrack.transcribe(session)
        assert len(fake.bodies) == again  # nothing left to send
    starts = [s.start_s for s in joined(store.speech("s"))]
    assert len(starts) == 2
    for heard, said in zip(starts, soundtracks.said, strict=True):
        assert said - 0.1 <= heard <= said + 0.5  # the fake hears in 50 ms steps from its window start
    assert store.get_session("s").audio == "done"  # type: ignore[union-attr]
    store.close()


@pytest.mark.service
async def test_audio_only_files_are_refused_with_the_reason(
    upstream: UpstreamFactory, video_service: ServiceFactory, soundtracks: Soundtracks
) -> None:
    gateway = await upstream("gateway")
    service = await video_service(gateway_url=gateway.url, transcription_model="speech")
    refused = await _upload(service, soundtracks.audio_only_m4a)
    assert refused.status_code == 400
    assert "soundtrack but no video" in refused.json()["error"]["message"]


@pytest.mark.service
async def test_speech_is_found_by_meaning_with_an_embeddings_group(
    upstream: UpstreamFactory, video_service: ServiceFactory, soundtracks: Soundtracks
) -> None:
    gateway = await upstream("gateway", echo_prompt=True, heard="My bicycle has a flat tyre.|Open the red box now.")
    service = await video_service(gateway_url=gateway.url, transcription_model="speech", embedding_model="embed")
    session_id = (await _upload(service, soundtracks.speech_mp4, fps="1")).json()["session_id"]
    assert (await _events_until_done(service, session_id))[-1]["event"] == "completed"
    embedded = [b["input"] for b in gateway.bodies if b.get("model") == "embed" and isinstance(b.get("input"), list)]
    assert ["My bicycle has a flat tyre.", "Open the red box now."] in embedded
    found = (await service.http.get("/search", params={"q": "bike"})).json()["results"]  # no word in common
    assert found[0]["kind"] == "speech"
    assert found[0]["description"] == "My bicycle has a flat tyre."


@pytest.mark.service
async def test_a_job_resumed_without_a_transcription_group_says_its_soundtrack_was_not_transcribed(
    upstream: UpstreamFactory, video_service: ServiceFactory, soundtracks: Soundtracks, tmp_path: Path
) -> None:
    gateway = await upstream("gateway")
    data = tmp_path / "data"
    store = SQLiteStore(data / "video.db")  # left queued by a service that had a transcription group
    options = {"fps": 1.0, "max_side": 768, "jpeg_quality": 85, "clip_mode": "images"}
    store.create_session(
        Session(
            "s",
            None,
            "speech.mp4",
            str(soundtracks.speech_mp4),
            "queued",
            options,
            None,
            12.0,
            12,
            audio="transcribing",
        )
    )
    store.close()
    service = await video_service(gateway_url=gateway.url, data_dir=data)
    assert (await _events_until_done(service, "s"))[-1]["event"] == "completed"
    status = (await service.http.get("/status/s")).json()
    assert status["audio"] == "not transcribed"
    assert any("no transcription group" in w for w in status["warnings"])
