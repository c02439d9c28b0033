from __future__ import annotations

import aiohttp
import httpx
import pytest

from gateway.backends.errors import map_transport_error
from gateway.errors import TollgateError, UpstreamTimeout, UpstreamUnavailable


def wrapped(outer: type[httpx.HTTPError], inner: BaseException) -> httpx.HTTPError:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer("wrapped") from exc
    except httpx.HTTPError as err:
        return err


@pytest.mark.parametrize(
    ("exc", "expected", "code"),
    [
        (
            wrapped(httpx.ReadError, aiohttp.ServerDisconnectedError()),
            UpstreamUnavailable,
            "upstream_unreachable",
        ),
        (
            wrapped(httpx.ConnectTimeout, aiohttp.ServerDisconnectedError()),
            UpstreamUnavailable,
            "upstream_unreachable",
        ),
        (
            wrapped(httpx.ReadTimeout, aiohttp.ServerTimeoutError()),
            UpstreamTimeout,
            "upstream_timeout",
        ),
        (httpx.ReadTimeout("slow"), UpstreamTimeout, "upstream_timeout"),
        (TimeoutError(), UpstreamTimeout, "upstream_timeout"),
        (httpx.ConnectError("refused"), UpstreamUnavailable, "upstream_unreachable"),
        (ConnectionRefusedError(), UpstreamUnavailable, "upstream_unreachable"),
    ],
)
def test_transport_errors_map_by_cause(
    exc: BaseException, expected: type[TollgateError], code: str
) -> None:
    err = map_transport_error(exc, "b1")
    assert type(err) is expected
    assert err.code == code
    # The client reads no backend name, host or port; ops find them in the detail.
    assert "b1" not in err.message and err.detail is not None and "b1" in err.detail
