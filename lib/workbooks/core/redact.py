"""The one rule for what of a URL may be recorded: no userinfo, no credential-like query values.

Every place that writes a URL somewhere a reader can see it (run.json, the index, notebooks,
reports, logs, notifications) passes it through :func:`redact_url`; every place that takes a
Prometheus URL from a person refuses one that carries credentials (:func:`refuse_credentials`),
because the URL is written into the archived notebook's parameters before any redaction could
happen.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from workbooks.core.errors import ConfigError

# Query keys that carry a secret in common APIs (Prometheus proxies, S3 presigned URLs, Grafana,
# cloud gateways). Matched case-insensitively on the whole key, and on common spellings.
_CREDENTIAL_KEY = re.compile(
    r"^(x-amz-.*|x-goog-.*|.*token.*|.*secret.*|.*passw(or)?d.*|pwd|.*api[-_]?key.*|key|"
    r"access[-_]?key.*|.*signature.*|sig|auth|authorization|.*session.*|credential.*|"
    r"private[-_]?key|client[-_]?secret|code)$",
    re.IGNORECASE,
)


def credential_key(key: str) -> bool:
    """Whether a query parameter of this name is likely to hold a secret."""
    return bool(_CREDENTIAL_KEY.match(key.strip()))


def credentials_in_url(url: str) -> str | None:
    """What in ``url`` looks like a credential (``"user:password"``, ``"query token"``), or None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if "@" in parts.netloc:
        return "user name or password before the host"
    keys = [key for key, _ in parse_qsl(parts.query, keep_blank_values=True) if credential_key(key)]
    if keys:
        return "query parameter " + ", ".join(sorted(set(keys)))
    return None


def redact_url(url: str) -> str:
    """``url`` without userinfo, fragment and credential-like query parameters (dropped whole).

    ``http://u:p@prom:9090/api?token=abc&step=30`` becomes ``http://prom:9090/api?step=30``.
    Text that is not a URL (a path, ``demo``, ``prometheus``) comes back as is.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(key, value) for key, value in pairs if not credential_key(key)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def refuse_credentials(url: str | None) -> None:
    """Raise :class:`ConfigError` if a Prometheus URL given by a person carries credentials.

    ``workbook run`` and ``workbook serve`` both call this, so both say the same thing.
    """
    if not url:
        return
    problem = credentials_in_url(url)
    if problem is None:
        return
    raise ConfigError(
        f"the Prometheus URL carries credentials ({problem}): it would be written into every "
        "archived notebook. Put them in WORKBOOKS_PROMETHEUS_TOKEN, or "
        "WORKBOOKS_PROMETHEUS_USERNAME / WORKBOOKS_PROMETHEUS_PASSWORD, and pass the URL without "
        f"them: {redact_url(url)}"
    )


def target_label(url: str) -> str:
    """A notification target as logs may show it: the scheme only.

    Apprise URLs carry their secret in the host or path (``slack://T000/B000/XXXX``), where
    :func:`redact_url` cannot tell it from an address.
    """
    return url.split("://", 1)[0] + "://…" if "://" in url else "(not a URL)"
