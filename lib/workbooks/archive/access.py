"""Who may read the archive's pages, and the headers and limits every response carries.

The pages show alert labels, findings, notebooks and evidence: off loopback they require a
reader. :class:`ReaderAccess` accepts a reader token (``Authorization: Bearer TOKEN``, or HTTP
Basic with the token as password, which browsers prompt for) or a reverse proxy's
authenticated-user header (oauth2-proxy's ``X-Forwarded-Email``, say: docs/archive-access.md).
:func:`check_exposure` refuses to listen off loopback with neither.

:class:`Guard` is the ASGI middleware both servers wrap their app in: it answers 414 to a query
string too long to be a filter, 401 to a page request without a reader, and adds
``X-Content-Type-Options``, ``X-Frame-Options`` and a script-free Content-Security-Policy to
every response, whatever route made it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workbooks.core.config import Config
from workbooks.core.errors import ConfigError

PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
# Filters and a search fit in far less; longer is an attack or a mistake: 414, not a reset.
MAX_QUERY_BYTES = 8192
# What uvicorn's h11 parser buffers for a request head: above MAX_QUERY_BYTES, so that an
# over-long query string is read whole and answered 414 instead of the connection being reset.
MAX_REQUEST_HEAD_BYTES = 1024 * 1024
_REALM = 'Basic realm="workbooks archive", charset="UTF-8"'


def credentials(header: str, scheme: str) -> str | None:
    """The credentials of ``Authorization: <scheme> <credentials>``, or None.

    Exactly one space after the scheme, no space around the credentials: ``bearer   TOKEN  ``
    is refused, as a strict server would.
    """
    name, space, value = header.partition(" ")
    if not space or name.lower() != scheme.lower() or not value or value != value.strip(" \t"):
        return None
    if " " in value:
        return None
    return value


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


@dataclass(frozen=True, kw_only=True)
class ReaderAccess:
    """What a request must show to read the pages; neither set means the pages are open."""

    token: str | None = None
    user_header: str | None = None

    @classmethod
    def from_config(cls, config: Config) -> ReaderAccess:
        return cls(
            token=config.service.reader_token or None,
            user_header=(config.service.trusted_user_header or "").strip() or None,
        )

    @property
    def required(self) -> bool:
        return bool(self.token or self.user_header)

    def allows(self, headers: Callable[[str], str | None]) -> bool:
        """Whether a request with these headers (``headers(name)``) may read the pages."""
        if not self.required:
            return True
        if self.user_header and (headers(self.user_header) or "").strip():
            return True
        if not self.token:
            return False
        authorization = headers("authorization") or ""
        if token_matches(credentials(authorization, "Bearer"), self.token):
            return True
        basic = credentials(authorization, "Basic")
        if basic is None:
            return False
        try:
            _, _, password = base64.b64decode(basic, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return token_matches(password, self.token)


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, access: ReaderAccess) -> None:
    """Refuse to serve the pages off loopback to anyone who asks."""
    if is_loopback(host) or access.required:
        return
    raise ConfigError(
        f"refusing to serve the archive's pages on {host} to anyone who reaches it: set "
        "WORKBOOKS_READER_TOKEN (readers send it as a bearer token or as the Basic password), "
        "or put an authenticating proxy in front and set WORKBOOKS_TRUSTED_USER_HEADER "
        "(docs/archive-access.md), or listen on 127.0.0.1"
    )


class Guard:
    """Query length limit, reader check on page routes, and security headers on everything."""

    def __init__(
        self, app: ASGIApp, *, access: ReaderAccess, open_paths: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.access = access
        # Routes with their own check (/alerts takes the webhook token) or meant for monitors.
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in (b"x-content-type-options", b"x-frame-options")
                ]
                if not any(name.lower() == b"content-security-policy" for name, _ in headers):
                    headers.append((b"content-security-policy", PAGE_POLICY.encode()))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),
                ]
                message["headers"] = headers
            await send(message)

        if len(scope.get("query_string", b"")) > MAX_QUERY_BYTES:
            await _plain(with_headers, 414, f"the query string is over {MAX_QUERY_BYTES} bytes")
            return
        path = scope.get("path", "")
        if path not in self.open_paths and not self.access.allows(_header_reader(scope)):
            await _plain(
                with_headers,
                401,
                "the archive's pages need a reader: send the reader token (Bearer, or as the "
                "Basic password), or come through the authenticating proxy",
                [(b"www-authenticate", _REALM.encode())],
            )
            return
        await self.app(scope, receive, with_headers)


def _header_reader(scope: Scope) -> Callable[[str], str | None]:
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return lambda name: headers.get(name.lower())


async def _plain(
    send: Callable, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = (text + "\n").encode("utf-8")
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
