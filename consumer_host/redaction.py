"""Keep credentials out of everything a person or a log pipeline can read."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# scheme://user:password@  -> scheme://user:***@   (anywhere inside a longer text)
_CREDENTIALS_IN_TEXT = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*):(?P<secret>[^@\s/]+)@"
)


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/vhost`` -> ``amqp://user:***@host/vhost``.

    A password given without a user (``redis://:secret@host``) is masked as well.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_text(text: str) -> str:
    """Mask the password of every URL that appears inside ``text``."""
    if "://" not in text:
        return text
    return _CREDENTIALS_IN_TEXT.sub(r"\g<head>:***@", text)


def redact_event(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: mask URL passwords in every string value, tracebacks included."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact_text(value)
        elif isinstance(value, list | dict):
            event_dict[key] = _redact_nested(value)
    return event_dict


def _redact_nested(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [_redact_nested(item) for item in value]
    if isinstance(value, dict):
        return {key: _redact_nested(item) for key, item in value.items()}
    return value
