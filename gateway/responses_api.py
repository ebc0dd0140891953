"""The Responses API's state: ids that lead back to a response, follow-up turns, GET and DELETE.

- A deployment that serves the API itself (vLLM, OpenAI) keeps its responses; its ids are
  wrapped (gateway.response_ids) so a follow-up (``previous_response_id``), a GET or a DELETE
  goes back to that deployment from any replica.
- A response the gateway bridged to chat is kept by the gateway (gateway.response_store); a
  follow-up sends the earlier turns upstream as input items, so any deployment of the group
  can answer it, bridged or not.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from common.errors import InvalidRequest, NotFound
from gateway.auth import Principal
from gateway.bridges.responses import ResponsesBridge, input_items
from gateway.deployment import Deployment
from gateway.forwarding import Call
from gateway.response_ids import ResponseIds
from gateway.response_store import ResponseStore, StoredResponse
from gateway.routing import Route, Router

log = logging.getLogger("gateway.responses")
_PREVIOUS = b'"previous_response_id"'


class ResponsesState:
    """What the Responses routes share: the id scheme and the store of bridged responses."""

    def __init__(self, router: Router, ids: ResponseIds, store: ResponseStore) -> None:
        self.router = router
        self.ids = ids
        self.store = store
        self._writes: set[asyncio.Task[None]] = set()

    def _deployments(self) -> list[Deployment]:
        return [d for group in self.router.groups.values() for d in group.deployments]

    async def prepare(self, call: Call, route: Route, bridges: bool) -> None:
        """Point ``call`` at the deployment or the conversation its ``previous_response_id`` names,
        and give it what bridged deployments need (``bridges``: the group has some)."""
        history: list[dict[str, Any]] | None = None
        body: dict[str, Any] | None = None
        if _PREVIOUS in call.raw:
            body = call.parsed()
            previous = body.get("previous_response_id")
            if previous is not None:
                history = await self._follow(call, route, body, previous)
        call.rename_id = self.ids.wrap
        if bridges:
            body = body if body is not None else call.parsed()
            group = route.group.name
            call.translation = ResponsesBridge(
                body,
                call.requested_model,
                history,
                keep=lambda response, items: self._keep(group, response, items),
                response_id=self.ids.new_stored(),
            )

    async def _follow(
        self, call: Call, route: Route, body: dict[str, Any], previous: object
    ) -> list[dict[str, Any]] | None:
        if not isinstance(previous, str):
            raise InvalidRequest("'previous_response_id' must be a string", param="previous_response_id")
        located = self.ids.locate(previous, self._deployments())
        if located is None:
            raise _not_found(previous, "previous_response_id")
        if located.deployment is not None:
            deployment = located.deployment
            if deployment not in route.group.deployments:
                raise InvalidRequest(
                    f"response '{previous}' was made by another model than '{call.requested_model}'",
                    param="previous_response_id",
                )
            call.where = lambda d: d is deployment
            assert located.upstream_id is not None
            call.raw = call.raw.replace(orjson.dumps(previous), orjson.dumps(located.upstream_id))
            call.previous_id = (located.upstream_id, previous)
            call.model_span = None
            call.reset_parsed()
            return None
        record = await self.store.get(previous)
        if record is None:
            raise _not_found(previous, "previous_response_id")
        if record.group != route.group.name:
            raise InvalidRequest(
                f"response '{previous}' was made by another model than '{call.requested_model}'",
                param="previous_response_id",
            )
        history = record.conversation()
        # Deployments that serve the API themselves get the conversation as input items.
        expanded = {k: v for k, v in body.items() if k != "previous_response_id"}
        expanded["input"] = history + input_items(body.get("input"))
        call.raw = orjson.dumps(expanded)
        call.model_span = None
        call.reset_parsed()
        return history

    def _keep(self, group: str, response: dict[str, Any], items: list[dict[str, Any]]) -> None:
        task = asyncio.create_task(self.store.put(response["id"], StoredResponse(group, response, items)))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def stored(self, response_id: str, principal: Principal) -> StoredResponse | None:
        """The gateway's own record of ``response_id`` (None: a deployment's), or 404."""
        located = self.ids.locate(response_id, self._deployments())
        if located is None:
            raise _not_found(response_id, "response_id")
        if located.deployment is not None:
            if not principal.may_use(located.deployment.group):
                raise _not_found(response_id, "response_id")
            return None
        record = await self.store.get(response_id)
        if record is None or not principal.may_use(record.group):
            raise _not_found(response_id, "response_id")
        return record

    def locate_deployment(self, response_id: str) -> tuple[Deployment, str]:
        """The deployment that keeps ``response_id``, and its own id for it."""
        located = self.ids.locate(response_id, self._deployments())
        if located is None or located.deployment is None or located.upstream_id is None:
            raise _not_found(response_id, "response_id")
        return located.deployment, located.upstream_id

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self.store.close()


def _not_found(response_id: str, param: str) -> NotFound:
    return NotFound(f"response '{response_id}' was not found", param=param, code="response_not_found")
