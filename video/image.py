"""A single image: a description from the vision model, then insights from the chat model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import cv2

from common.errors import InvalidRequest
from video.chat import ChatModel
from video.fanout import Describer
from video.sampling import SampledFrame, SamplingOptions, encode


def load_image(path: Path, options: SamplingOptions) -> SampledFrame:
    """Decode an image file and encode it as the vision model gets frames."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InvalidRequest("the file is not an image OpenCV can read (JPEG, PNG, WebP, BMP, TIFF)", param="file")
    jpeg, width, height, thumbnail = encode(image, options)
    return SampledFrame(0, 0.0, jpeg, width, height, thumbnail)


async def describe_image_file(path: Path, filename: str, describer: Describer, chat: ChatModel) -> dict[str, Any]:
    frame = await asyncio.to_thread(load_image, path, SamplingOptions())
    description = await describer.describe([frame])
    insights = await chat.insights(description)
    return {
        "filename": filename,
        "width": frame.width,
        "height": frame.height,
        "description": description,
        "insights": insights,
    }
