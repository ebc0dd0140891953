"""``GET``/``DELETE /v1/responses/{id}``, its ``input_items`` and ``cancel``: any replica answers.

A caller sees only responses of model groups its key may use; a deployment's answer is passed
on with its ids wrapped and its model named as the gateway's group, never the deployment's.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from common.errors import InvalidRequest, NotFound
from gateway.deployment import Deployment
from gateway.errors import rejected_from_upstream
from gateway.state import GatewayState, StateDep


def _json(data: object) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


async def _from_deployment(
    state: GatewayState, request: Request, response_id: str, method: bytes, suffix: str = ""
) -> Response:
    deployment, upstream_id = state.responses.locate_deployment(response_id)
    request.state.model_group = deployment.group
    status, data = await state.forwarder.fetch(
        deployment, method, f"responses/{upstream_id}{suffix}", request.state.request_id
    )
    if status in (404, 405) and method == b"GET" and not suffix:
        raise NotFound(f"response '{response_id}' was not found", param="response_id", code="response_not_found")
    if status == 405 or (status == 404 and suffix):
        raise InvalidRequest(
            f"the deployment that keeps response '{response_id}' does not support this operation",
            code="unsupported_operation",
        )
    if status >= 300:
        raise rejected_from_upstream(status, data)
    return _json(_renamed(state, deployment, orjson.loads(data)))


def _renamed(state: GatewayState, deployment: Deployment, value: Any) -> Any:
    """A deployment's answer with its response ids wrapped and its model shown as the group."""
    if isinstance(value, dict):
        out = {k: _renamed(state, deployment, v) for k, v in value.items()}
        if value.get("object") == "response" and isinstance(value.get("id"), str):
            out["id"] = state.responses.ids.wrap(deployment, value["id"])
            if value.get("model") == deployment.upstream_model:
                out["model"] = deployment.group
        return out
    if isinstance(value, list):
        return [_renamed(state, deployment, item) for item in value]
    return value


def add_responses_routes(app: FastAPI) -> None:
    """Mount the routes on ``app``."""

    @app.get("/v1/responses/{response_id}", tags=["openai"], summary="Retrieve a model response")
    async def get_response(response_id: str, request: Request, state: StateDep) -> Response:
        principal = state.keys.authenticate(request.headers.get("authorization"))
        record = await state.responses.stored(response_id, principal)
        if record is not None:
            return _json(record.response)
        return await _from_deployment(state, request, response_id, b"GET")

    @app.delete("/v1/responses/{response_id}", tags=["openai"], summary="Delete a model response")
    async def delete_response(response_id: str, request: Request, state: StateDep) -> Response:
        principal = state.keys.authenticate(request.headers.get("authorization"))
        record = await state.responses.stored(response_id, principal)
        if record is None:
            return await _from_deployment(state, request, response_id, b"DELETE")
        await state.responses.store.delete(response_id)
        return _json({"id": response_id, "object": "response", "deleted": True})

    @app.get("/v1/responses/{response_id}/input_items", tags=["openai"], summary="List a response's input items")
    async def input_items(response_id: str, request: Request, state: StateDep) -> Response:
        principal = state.keys.authenticate(request.headers.get("authorization"))
        record = await state.responses.stored(response_id, principal)
        if record is None:
            return await _from_deployment(state, request, response_id, b"GET", "/input_items")
        items = [
            {**item, "id": item.get("id") or f"item_{response_id[6:]}_{index}"}
            for index, item in enumerate(record.items)
        ]
        items.reverse()  # newest first, as the API lists them by default
        return _json(
            {
                "object": "list",
                "data": items,
                "first_id": items[0]["id"] if items else None,
                "last_id": items[-1]["id"] if items else None,
                "has_more": False,
            }
        )

    @app.post("/v1/responses/{response_id}/cancel", tags=["openai"], summary="Cancel a background response")
    async def cancel_response(response_id: str, request: Request, state: StateDep) -> Response:
        principal = state.keys.authenticate(request.headers.get("authorization"))
        record = await state.responses.stored(response_id, principal)
        if record is None:
            return await _from_deployment(state, request, response_id, b"POST", "/cancel")
        raise InvalidRequest("only background responses can be cancelled", param="response_id")
