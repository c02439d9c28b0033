"""Small pieces the JSON endpoints outside the proxied dialects share (admin API, dashboard):
JSON bodies, errors in OpenAI's shape, the Bearer token, validated query parameters."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.errors import openai_error_body
from gateway.errors import InvalidRequest, TollgateError

M = TypeVar("M", bound=BaseModel)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def error_response(err: TollgateError) -> Response:
    return Response(
        openai_error_body(err), err.status, headers=dict(err.headers), media_type="application/json"
    )


def bearer(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def validated(model: type[M], data: dict[str, Any]) -> M:
    """The model, or a 400 naming the first field that is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(
            f"{where}: {first['msg']}" if where else first["msg"], param=where or None
        ) from exc
