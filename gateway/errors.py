"""One error tree for everything Tollgate itself raises, each class carrying its HTTP status.

    TollgateError
     ├── InvalidRequest        400  invalid_request_error
     ├── AuthenticationFailed  401  invalid_request_error / invalid_api_key
     ├── PermissionDenied      403  permission_error
     ├── ModelNotFound         404  invalid_request_error / model_not_found
     ├── PayloadTooLarge       413  invalid_request_error / request_too_large
     ├── PolicyDenied          4xx  policy_error (status chosen by the policy)
     ├── UpstreamRejected      4xx  invalid_request_error / upstream_rejected (the request)
     ├── UpstreamRateLimited   429  rate_limit_error / upstream_rate_limited
     ├── UpstreamUnavailable   502  api_error / upstream_unreachable
     │    ├── UpstreamAuthFailed    upstream_auth_failed (the gateway's credentials, not yours)
     │    └── UpstreamBadResponse   upstream_bad_response (not what the API promises)
     ├── ServiceUnavailable    503  api_error / service_unavailable
     ├── UpstreamTimeout       504  api_error / upstream_timeout
     └── InternalError         500  api_error / internal_error

Beside it, `Fault`: what goes wrong inside the gateway itself (a store, the database schema, a
plugin, a config file). A fault is never shown to a client as it is: the code that meets it
decides what the client sees (a cache miss, limits enforced locally, a 503) or refuses to
start with the fault's words.

    Fault
     ├── ConfigError           a config file is invalid (every problem at file:line)
     ├── StoreUnavailable, StoreRejected, StoreDown   the budget counters' store
     ├── StoreFailure          the response cache's store (a miss)
     ├── SchemaOutOfDate       the database is behind the code (the command to run)
     ├── KeyRefused            an admin's key operation (no such key, a name taken)
     ├── PluginLoadError, StrategyLoadError          a policy or strategy cannot load
     ├── RedisReplyError, EncodingFileCorrupt         a Redis reply, a tokenizer file
     └── PruneRefused, QuarantineStopped, YamlProblem

The simulator's SimError is the simulated server's own, rendered as its HTTP answers; it is
not part of the gateway.

Rendering into a vendor dialect happens at the API edge (`gateway.api.errors`), so the
classes know nothing of JSON shapes. `message` is what the client reads and never names an
internal host, port or secret; `detail` is what ops need (the upstream's own words, the
socket error) and goes only to the log and the audit event.
"""

from __future__ import annotations

from collections.abc import Mapping


class TollgateError(Exception):
    status: int = 500
    error_type: str = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers: dict[str, str] = dict(headers or {})


class InvalidRequest(TollgateError):
    status = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(TollgateError):
    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(TollgateError):
    status = 403
    error_type = "permission_error"


class ModelNotFound(TollgateError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(TollgateError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class PolicyDenied(TollgateError):
    status = 403
    error_type = "policy_error"
    code = "policy_denied"


class UpstreamRejected(TollgateError):
    """The upstream refused the request itself (a 4xx about what was asked)."""

    status = 400
    error_type = "invalid_request_error"
    code = "upstream_rejected"


class UpstreamRateLimited(TollgateError):
    status = 429
    error_type = "rate_limit_error"
    code = "upstream_rate_limited"


class UpstreamUnavailable(TollgateError):
    status = 502
    code = "upstream_unreachable"


class UpstreamAuthFailed(UpstreamUnavailable):
    code = "upstream_auth_failed"


class UpstreamBadResponse(UpstreamUnavailable):
    code = "upstream_bad_response"


class ServiceUnavailable(TollgateError):
    status = 503
    code = "service_unavailable"


class UpstreamTimeout(TollgateError):
    status = 504
    code = "upstream_timeout"


class InternalError(TollgateError):
    status = 500
    code = "internal_error"


class Fault(Exception):
    """Something of the gateway's own failed; see the tree above."""


class ConfigError(Fault):
    """A configuration file is invalid; `problems` holds one `file:line:col: path: reason` each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


__all__ = [
    "AuthenticationFailed",
    "ConfigError",
    "Fault",
    "InternalError",
    "InvalidRequest",
    "ModelNotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PolicyDenied",
    "ServiceUnavailable",
    "TollgateError",
    "UpstreamAuthFailed",
    "UpstreamBadResponse",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]
