"""A single image: a description from the vision model, then insights from the chat model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import cv2
import imagesize

from common.errors import InvalidRequest, PayloadTooLarge
from video.chat import ChatModel
from video.fanout import Describer
from video.sampling import SampledFrame, SamplingOptions, encode

NOT_AN_IMAGE = "the file is not an image this service reads (JPEG, PNG, WebP, BMP, TIFF)"


def check_pixels(path: Path, max_pixels: int) -> tuple[int, int]:
    """The image's size from its header, refusing one that would decode to more than ``max_pixels``.

    Checked before decoding: a small compressed file can hold a picture that decodes to gigabytes.
    """
    try:
        width, height = imagesize.get(str(path))
    except (OSError, ValueError):
        width, height = -1, -1
    if width <= 0 or height <= 0:
        raise InvalidRequest(NOT_AN_IMAGE, param="file", code="invalid_image")
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"the image is {width}x{height} ({width * height} pixels); the limit is {max_pixels} pixels",
            param="file",
        )
    return width, height


def load_image(path: Path, options: SamplingOptions, max_pixels: int) -> SampledFrame:
    """Decode an image file and encode it as the vision model gets frames."""
    check_pixels(path, max_pixels)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InvalidRequest(NOT_AN_IMAGE, param="file", code="invalid_image")
    jpeg, width, height, thumbnail = encode(image, options)
    return SampledFrame(0, 0.0, jpeg, width, height, thumbnail)


async def describe_image_file(
    path: Path, filename: str, describer: Describer, chat: ChatModel, max_pixels: int
) -> dict[str, Any]:
    frame = await asyncio.to_thread(load_image, path, SamplingOptions(), max_pixels)
    description = await describer.describe([frame])
    insights = await chat.insights(description)
    return {
        "filename": filename,
        "width": frame.width,
        "height": frame.height,
        "description": description,
        "insights": insights,
    }
