"""Who may read the dashboard and who may act on it.

- Loopback by default. A server bound to any other address needs ``MULTIAGENT_METRICS_TOKEN``
  (:func:`check_bind` refuses to start without it) and then every read needs it too.
- Actions (resume, approve) always need the token, also on loopback: a page any local user
  or any web page the browser has open could otherwise drive runs.
- CSRF-safe: the token travels in the ``Authorization: Bearer`` header, never in a cookie, so
  a cross-site form cannot carry it; an action whose ``Origin`` is not this server is refused.
- On loopback, a request naming another host (DNS rebinding) is refused.
- The page shell and its static files hold no data and are served to anyone; they ask for the
  token when one is needed.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from fastapi import HTTPException, Request

from multiagent.errors import UsageError

TOKEN_ENV = "MULTIAGENT_METRICS_TOKEN"
#: Tokens shorter than this are refused: a guessable token is no protection.
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback ``host`` without a token, and any token too short to be one.

    Raises:
        UsageError: One line naming the host, the variable and what to do.
    """
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise UsageError(
            f"{TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} characters, got {len(token)}"
        )
    if not is_loopback(host) and not token:
        raise UsageError(
            f"--host {host} is not a loopback address: set {TOKEN_ENV} to a secret of at least "
            f"{MIN_TOKEN_CHARS} characters, or leave --host at 127.0.0.1"
        )


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@dataclass(frozen=True)
class Guard:
    """The access rules of one server.

    Args:
        token: The shared secret, or ``None`` (then no action is allowed at all).
        public: The server listens on a non-loopback address (reads need the token).
    """

    token: str | None
    public: bool

    def _token_ok(self, request: Request) -> bool:
        given = _bearer(request)
        # as bytes: compare_digest raises on str with non-ASCII characters (a header's latin-1)
        return bool(
            self.token
            and given
            and hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))
        )

    def _host_ok(self, request: Request) -> None:
        """On loopback, only loopback names: a DNS-rebinding page (Host: evil.example) is out."""
        if self.public:
            return
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host and not is_loopback(name):
            raise HTTPException(status_code=403, detail=f"unexpected Host header: {host}")

    def read(self, request: Request) -> None:
        """FastAPI dependency of every data endpoint."""
        self._host_ok(request)
        if self.public and not self._token_ok(request):
            raise HTTPException(
                status_code=401,
                detail="this server is not on loopback: send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def act(self, request: Request) -> None:
        """FastAPI dependency of every action: the token, always, and a same-origin request."""
        self._host_ok(request)
        if not self.token:
            raise HTTPException(
                status_code=403,
                detail=f"actions are disabled: start the server with {TOKEN_ENV} set",
            )
        if not self._token_ok(request):
            raise HTTPException(
                status_code=401,
                detail="actions need Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        origin = request.headers.get("origin")
        if origin is not None and origin != _own_origin(request):
            raise HTTPException(status_code=403, detail=f"cross-origin action refused: {origin}")


def _own_origin(request: Request) -> str:
    host = request.headers.get("host", "")
    return f"{request.url.scheme}://{host}"
