"""What a request costs: its usage times the model's per-token prices.

Prices come from the deployment's config (``model_info`` or ``litellm_params``:
``input_cost_per_token``, ``output_cost_per_token``, as LiteLLM's config has them), else from the
price map that ships inside the ``litellm`` package, read as JSON (litellm is never imported for
it), else there is none and the request costs 0 (``gateway check-config`` says which groups).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from gateway.deployment import Deployment

log = logging.getLogger("gateway.prices")
PRICE_MAP_FILES = ("model_prices_and_context_window_backup.json", "model_prices_and_context_window.json")


@dataclass(frozen=True)
class Price:
    """USD per token; ``source`` says where it was found."""

    input_per_token: float
    output_per_token: float
    source: str

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token


def configured_price(*sections: Mapping[str, Any]) -> Price | None:
    """The prices a config entry sets (the first section that sets either wins)."""
    for section in sections:
        given = section.get("input_cost_per_token"), section.get("output_cost_per_token")
        if any(isinstance(v, int | float) for v in given):
            values = [float(v) if isinstance(v, int | float) and v >= 0 else 0.0 for v in given]
            return Price(values[0], values[1], "config")
    return None


def packaged_prices() -> dict[str, tuple[float, float]]:
    """(input, output) USD per token of every model in LiteLLM's price map, read from its installed
    package without importing it (about 80 ms; kept compact); empty without litellm."""
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        return {}
    for name in PRICE_MAP_FILES:
        path = Path(spec.origin).parent / name
        if path.is_file():
            try:
                loaded = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                log.warning("cannot read litellm's price map %s: %s", path, exc)
                return {}
            found = {}
            for model, entry in loaded.items() if isinstance(loaded, dict) else ():
                price = configured_price(entry) if isinstance(entry, dict) and model != "sample_spec" else None
                if price is not None:
                    found[model] = (price.input_per_token, price.output_per_token)
            return found
    return {}


class PriceBook:
    """Each deployment's price for each upstream model it is asked for (looked up once).

    ``load`` reads the packaged price map (call it off the event loop); until then, and without
    litellm installed, only prices set in the config are known."""

    def __init__(self, read_map: Callable[[], dict[str, tuple[float, float]]] = packaged_prices) -> None:
        self._read_map = read_map
        self._map: dict[str, tuple[float, float]] = {}
        self._found: dict[tuple[str, str], Price | None] = {}

    def load(self) -> None:
        self._map = self._read_map()
        self._found.clear()

    def of(self, deployment: Deployment, upstream_model: str) -> Price | None:
        key = (deployment.id, upstream_model)
        if key not in self._found:
            self._found[key] = deployment.price or self.mapped(deployment.provider, upstream_model)
        return self._found[key]

    def mapped(self, provider: str, model: str) -> Price | None:
        """The price map's entry for ``provider/model``, else for ``model``."""
        for name in (f"{provider}/{model}", model):
            entry = self._map.get(name)
            if entry is not None:
                return Price(entry[0], entry[1], "litellm price map")
        return None
