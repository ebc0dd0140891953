"""Sampling real generated videos: timestamps, rates, limits, scene changes, damage and bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.video.conftest import VFR_FRAMES, VFR_SOURCE_FPS, Videos
from video.probe import VideoRejected, probe
from video.sampling import SamplingOptions, SamplingReport, sample

pytestmark = pytest.mark.service


def _timestamps(path: Path, **options: float | int | None) -> tuple[list[float], SamplingReport]:
    report = SamplingReport()
    frames = list(sample(path, probe(path), SamplingOptions(**options), report))  # type: ignore[arg-type]
    assert [f.index for f in frames] == list(range(len(frames)))
    return [f.timestamp_s for f in frames], report


@pytest.mark.parametrize("name", ["h264_mp4", "mpeg4_mkv", "mjpeg_avi", "vp9_webm"])
def test_one_frame_a_second_in_every_container(videos: Videos, name: str) -> None:
    stamps, report = _timestamps(getattr(videos, name), fps=1)
    assert stamps == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert report.warnings == []


def test_higher_rate_and_max_frames_spread_evenly(videos: Videos) -> None:
    assert _timestamps(videos.h264_mp4, fps=2)[0] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    assert _timestamps(videos.h264_mp4, fps=10, max_frames=4)[0] == [0.0, 1.3, 2.5, 3.8]


def test_variable_frame_rate_timestamps_are_the_real_frame_times(videos: Videos) -> None:
    frame_times = [n / VFR_SOURCE_FPS for n in VFR_FRAMES]
    stamps, _ = _timestamps(videos.vfr_mp4, fps=4)
    for stamp in stamps:
        assert any(abs(stamp - t) < 0.002 for t in frame_times), stamp
    # In the dense second the sampler lands on frames a quarter second apart, not on the sparse grid.
    dense = [s for s in stamps if 2.0 <= s <= 3.0]
    assert dense == pytest.approx([2.0, 2.25, 2.5, 2.75, 3.0], abs=0.02)
    info = probe(videos.vfr_mp4)
    assert info.duration_s == pytest.approx(6.0, abs=0.15)


def test_very_short_and_single_frame_videos(videos: Videos) -> None:
    assert _timestamps(videos.short_mp4, fps=1)[0] == [0.0]
    assert _timestamps(videos.single_frame_mp4, fps=1)[0] == [0.0]


def test_scene_change_mode_keeps_only_new_scenes(videos: Videos) -> None:
    every, _ = _timestamps(videos.two_scenes_mp4, fps=2)
    scenes, _ = _timestamps(videos.two_scenes_mp4, fps=2, scene_threshold=20)
    assert len(every) == 12
    assert scenes == [0.0, 3.0]


def test_frames_are_resized_jpegs_with_thumbnails(tmp_path: Path) -> None:
    from tests.video.conftest import make_video

    path = make_video(tmp_path / "wide.mp4", seconds=1, size="1280x720")
    frame = next(sample(path, probe(path), SamplingOptions(max_side=640, thumbnail_side=128)))
    image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
    thumb = cv2.imdecode(np.frombuffer(frame.thumbnail, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (360, 640) == (frame.height, frame.width)
    assert max(thumb.shape[:2]) == 128


def test_skipped_frames_are_not_encoded(videos: Videos) -> None:
    frames = list(sample(videos.h264_mp4, probe(videos.h264_mp4), SamplingOptions(), skip={0, 2, 3}.__contains__))
    assert [(f.index, f.timestamp_s) for f in frames] == [(1, 1.0), (4, 4.0)]


def test_damaged_video_reports_the_missing_range(videos: Videos) -> None:
    stamps, report = _timestamps(videos.damaged_mp4, fps=1)
    assert stamps[0] == 0.0
    assert report.gaps, "damage must be reported, never a silent short result"
    assert len(report.warnings) == 1
    assert "damaged" in report.warnings[0]
    for gap in report.gaps:
        assert not any(gap.start_s < s < gap.end_s for s in stamps)
        assert gap.describe() in report.warnings[0]
    # Frames on both sides of the damage: the decoder skipped past it.
    assert min(s for s in stamps) < report.gaps[0].start_s < report.gaps[0].end_s <= max(stamps)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty", "the file is empty"),
        ("not_a_video", "cannot be opened as a video"),
        ("truncated_mp4", "cannot be opened as a video"),
    ],
)
def test_bad_files_are_refused_before_any_work(videos: Videos, name: str, message: str) -> None:
    with pytest.raises(VideoRejected, match=message):
        probe(getattr(videos, name))


def test_limits_are_enforced(videos: Videos) -> None:
    with pytest.raises(VideoRejected, match="the limit is 1000"):
        probe(videos.h264_mp4, max_bytes=1000)
    with pytest.raises(VideoRejected, match="lasts 5s; the limit is 2s"):
        probe(videos.h264_mp4, max_duration_s=2)


def test_parallel_segments_give_the_same_frames_as_one_decoder(tmp_path: Path) -> None:
    from tests.video.conftest import make_video
    from video.sampling import sample_times
    from video.segments import plan_segments

    path = make_video(tmp_path / "long.mp4", seconds=45, extra=("-g", "25"))
    info = probe(path)
    assert len(plan_segments(info, sample_times(info, SamplingOptions(fps=2)), workers=2)) == 3
    one = list(sample(path, info, SamplingOptions(fps=2, workers=1)))
    two = list(sample(path, info, SamplingOptions(fps=2, workers=2)))
    assert [f.timestamp_s for f in one] == [i / 2 for i in range(90)]
    assert [(f.index, f.timestamp_s, f.jpeg) for f in two] == [(f.index, f.timestamp_s, f.jpeg) for f in one]


def test_parallel_segments_handle_variable_frame_rate(tmp_path: Path) -> None:
    from tests.video.conftest import ffmpeg

    path = tmp_path / "vfr-long.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30:duration=30",
        "-vf", r"select='not(mod(n\,7))+between(t\,12\,13)'", "-fps_mode", "vfr",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path),
    )  # fmt: skip
    info = probe(path)
    one = [f.timestamp_s for f in sample(path, info, SamplingOptions(fps=3, workers=1))]
    two = [f.timestamp_s for f in sample(path, info, SamplingOptions(fps=3, workers=2))]
    assert one == two
    assert len(one) > 60


def test_scene_changes_across_segments(tmp_path: Path) -> None:
    from tests.video.conftest import ffmpeg

    path = tmp_path / "scenes.mp4"
    colours = ["red", "blue", "green"]
    inputs = [arg for c in colours for arg in ("-f", "lavfi", "-i", f"color=c={c}:size=160x120:rate=10:duration=10")]
    ffmpeg(
        *inputs, "-filter_complex", "[0:v][1:v][2:v]concat=n=3:v=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)
    )
    stamps = [f.timestamp_s for f in sample(path, probe(path), SamplingOptions(fps=1, scene_threshold=20, workers=2))]
    assert stamps == [0.0, 10.0, 20.0]
