"""What the gateway's groups can take, asked once and remembered for a while."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import openai
from openai import AsyncOpenAI

log = logging.getLogger("video")
CHECK_EVERY_S = 60.0


@dataclass
class VideoSupport:
    """Whether the vision group is sent clips as video items: ``setting`` ``video`` or ``images``
    decides; ``auto`` asks the gateway (``GET /v1/models/{model}`` reports ``supports_video``)."""

    client: AsyncOpenAI
    model: str
    setting: Literal["auto", "video", "images"] = "auto"
    _known: bool | None = None
    _checked_at: float = field(default=float("-inf"))

    async def takes_video(self) -> bool:
        if self.setting != "auto":
            return self.setting == "video"
        if self._known is not None and time.monotonic() - self._checked_at < CHECK_EVERY_S:
            return self._known
        try:
            card = await self.client.models.retrieve(self.model)
            self._known = (card.model_extra or {}).get("supports_video") is True
        except openai.APIError as exc:
            # Unknown: pictures work with every vision model, so they are the safe choice.
            log.info("cannot ask the gateway whether %s takes video (%s); frames go as images", self.model, exc)
            self._known = False
        self._checked_at = time.monotonic()
        return self._known
