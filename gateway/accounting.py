"""Per-request bookkeeping: metrics and the access log line, written once when a request ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gateway.access_log import AccessLog
from gateway.metrics import NO_DEPLOYMENT, Metrics
from gateway.prices import Price


class Accounting:
    """Collects what one request did and reports it when ``finish`` is called."""

    def __init__(
        self,
        metrics: Metrics,
        request_id: str,
        model_group: str,
        stream: bool,
        clock: Callable[[], float] = time.perf_counter,
        access_log: AccessLog | None = None,
        endpoint: str = "chat/completions",
    ) -> None:
        self._series = metrics.group(model_group, endpoint)
        self.endpoint = endpoint
        self.access_log = access_log or AccessLog()
        self.request_id = request_id
        self.model_group = model_group
        self.stream = stream
        self.deployment = NO_DEPLOYMENT
        self.waited_s = 0.0
        self.attempts = 0
        self._clock = clock
        self.started = clock()
        self._finished = False
        self.price: Price | None = None  # the answering deployment's, once one is chosen
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = 0.0
        self.on_finish: Callable[[Accounting, int], None] | None = None  # spend, a managed key's slot
        self._series.in_flight.inc()

    def now(self) -> float:
        """The accounting clock."""
        return self._clock()

    def first_byte(self) -> None:
        """Record time to first streamed chunk."""
        self._series.ttft.observe(self._clock() - self.started)

    def usage(self, usage: dict[str, Any] | None) -> None:
        """Count tokens reported by the deployment."""
        if not usage:
            return
        # OpenAI's chat names, else the Responses and Anthropic names.
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        if isinstance(prompt, int) and prompt > 0:
            self._series.prompt_tokens.inc(prompt)
            self.prompt_tokens = prompt
        if isinstance(completion, int) and completion > 0:
            self._series.completion_tokens.inc(completion)
            self.completion_tokens = completion
        if self.price is not None:
            self.cost = self.price.cost(self.prompt_tokens, self.completion_tokens)

    def cost_header(self) -> tuple[bytes, bytes]:
        """LiteLLM's ``x-litellm-response-cost`` header: this answer's cost in USD."""
        return b"x-litellm-response-cost", repr(self.cost).encode()

    def add_wait(self, seconds: float) -> None:
        """Time spent waiting for others (a free slot, a deployment, backoff): not overhead."""
        self.waited_s += seconds

    def finish(self, status_code: int, note: str | None = None) -> None:
        """Write metrics and the access log line; later calls do nothing."""
        if self._finished:
            return
        self._finished = True
        if self.on_finish is not None:
            self.on_finish(self, status_code)
        total = self._clock() - self.started
        series = self._series
        series.in_flight.dec()
        series.requests(self.deployment, status_code).inc()
        series.latency[self.stream].observe(total)
        if self.attempts:
            series.overhead.observe(max(0.0, total - self.waited_s))
        self.access_log.line(
            {
                "request_id": self.request_id,
                "model_group": self.model_group,
                "endpoint": self.endpoint,
                "deployment": self.deployment,
                "status": status_code,
                "stream": self.stream,
                "attempts": self.attempts,
                "duration_ms": round(total * 1000, 2),
                **({"note": note} if note else {}),
            }
        )
