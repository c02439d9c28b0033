"""/dashboard: the spend dashboard (a static page and the JSON it draws from the spend rollups,
i.e. exactly what the traces said).

Access: the admin key or the read-only dashboard key (`telemetry.dashboard.key_env`) as a
Bearer token; with neither configured (the embedded default) only clients on the loopback
interface get data. The page itself holds no data and is served to anyone.
"""

from __future__ import annotations

import hmac
import ipaddress
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.replies import bearer, error_response, json_response, validated
from gateway.api.spend_data import (
    SummaryQuery,
    fresh,
    summary_data,
)
from gateway.errors import (
    AuthenticationFailed,
    PermissionDenied,
    TollgateError,
)
from gateway.services import Services

_ASSETS = {
    "/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_dashboard(request: Request, services: Services) -> None:
    keys = [k for k in (services.admin_key, services.dashboard_key) if k]
    if not keys:
        if _loopback(request):
            return
        env = services.runtime.current.config.telemetry.dashboard.key_env
        raise PermissionDenied(
            "The dashboard is open on 127.0.0.1 only while no admin or dashboard key is set: "
            f"set {env or 'telemetry.dashboard.key_env'} (read-only) or the admin key and "
            "restart.",
            code="dashboard_disabled",
        )
    given = bearer(request)
    if not given:
        raise AuthenticationFailed(
            "Missing key: send 'Authorization: Bearer <dashboard or admin key>'."
        )
    if not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
        raise AuthenticationFailed("Incorrect dashboard key.")


class Assets:
    """The page, script and styles, read from the package once when the routes are built."""

    def __init__(self) -> None:
        folder = resources.files("gateway.static")
        self._files = {
            path: (folder.joinpath(name).read_bytes(), media)
            for path, (name, media) in _ASSETS.items()
        }

    async def serve(self, request: Request) -> Response:
        body, media = self._files[request.url.path.rstrip("/") or "/dashboard"]
        headers = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}
        return Response(body, media_type=media, headers=headers)


async def summary(request: Request) -> Response:
    services: Services = request.state.services
    try:
        check_dashboard(request, services)
        query = validated(SummaryQuery, dict(request.query_params))
        await fresh(services)
        data = await summary_data(services, query)
    except TollgateError as err:
        return error_response(err)
    return json_response(data)


def dashboard_routes() -> list[Route]:
    assets = Assets()
    return [
        *(Route(path, assets.serve, methods=["GET"]) for path in _ASSETS),
        Route("/dashboard/", assets.serve, methods=["GET"]),
        Route("/dashboard/api/summary", summary, methods=["GET"]),
    ]
