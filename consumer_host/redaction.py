"""Keep credentials out of everything a person or a log pipeline can read.

A broker URL can carry a secret in two places, and the transports accept both:

- the userinfo: ``amqp://user:secret@host//``, ``redis://:secret@host:6379/0`` (no user), with
  the password raw or percent-encoded, even with a raw ``@`` in it (``user:p@ss@host``: the
  authority ends at its last ``@``);
- the query string: ``redis://host:6379/0?password=secret`` (redis-py reads it), and any other
  parameter whose name says it is a secret (``ssl_keyfile_password``, ``token``, ``sasl_pass``...).

Both are masked with ``***`` everywhere a URL can appear: alone (:func:`redact_url`), inside a
longer text such as an error message or a traceback (:func:`redact_text`), in every string of a
log event (:func:`redact_event`). kombu's failover form, several URLs joined by ``;``, is masked
URL by URL.

A URL urllib cannot parse still has its secret masked: whenever what lies between ``://`` and
the last ``@`` holds a character that would end a well-formed authority (``/ ? #`` or a space: a
password nobody percent-encoded), all of it is taken for the userinfo and masked, whatever it
holds. That can mask a path or query that really held an ``@``: shown less, never leaked.
"""

from __future__ import annotations

import itertools
import re
from typing import Any
from urllib.parse import unquote_plus

MASK = "***"

# scheme://user:secret@ ; the secret runs to the last "@" before the authority ends ("/", "?",
# "#" or a space), so a raw "@" inside a password does not leave its tail behind.
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s]*):(?P<secret>[^/?#\s]*)@")

_SCHEME = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://")

# A URL inside a text: the scheme, "://", then everything up to a space or a quote. First, a URL
# whose authority a space interrupts before any "@" (``redis://:pw secret@host``): it runs on,
# on the same line and without quotes, to the next "@".
_URL_IN_TEXT = re.compile(
    r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>`/?#@]*[ \t][^'\"<>`\n@]{0,200}@[^\s'\"<>`]*"
    r"|\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>`]*"
)

# What ends a well-formed authority: in a userinfo, the sign of a raw, unparseable secret.
_AUTHORITY_END = re.compile(r"[/?#\s]")

# One query parameter: its separator, its name and its value.
_QUERY_PARAMETER = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;#?\s]+)=(?P<value>[^&;#\s]*)")

#: Parameter names (lower-cased, percent-decoded) that hold secrets when they contain one of these.
SECRET_PARAMETER_WORDS = ("pass", "pwd", "secret", "token", "credential", "apikey", "api_key")


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/vhost`` -> ``amqp://user:***@host/vhost``.

    Also masks a password given without a user (``redis://:secret@host``) and secret query
    parameters (``redis://host/0?password=secret`` -> ``redis://host/0?password=***``).
    """
    return _redact_url_text(url)


def redact_text(text: str) -> str:
    """Mask the secrets of every URL that appears inside ``text``."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda match: _redact_url_text(match.group(0)), text)


def is_secret_parameter(name: str) -> bool:
    """Whether a query parameter named ``name`` carries a secret (``password``, ``token``...)."""
    plain = unquote_plus(name).lower()
    return any(word in plain for word in SECRET_PARAMETER_WORDS)


def userinfo_span(url: str) -> tuple[int, int] | None:
    """Where the userinfo of the one URL ``url`` lies (``url[start:end]``), if it has one: from
    ``://`` to its last ``@``, whatever characters it holds."""
    scheme = _SCHEME.match(url.lstrip())
    if scheme is None:
        return None
    start = len(url) - len(url.lstrip()) + scheme.end()
    end = url.rfind("@", start)
    return None if end < 0 else (start, end)


def userinfo_parts(url: str) -> list[str]:
    """The userinfo of ``url`` and the pieces a parser may have cut it into (at ``:``, ``#``,
    ``?``, ``/``, spaces): what an error message about a malformed URL must not quote."""
    span = userinfo_span(url)
    if span is None:
        return []
    userinfo = url[span[0] : span[1]]
    parts = {userinfo, *re.split(r"[#?/\s@]+", userinfo), *re.split(r"[:#?/\s@]+", userinfo)}
    return sorted((part for part in parts if part), key=len, reverse=True)


def redact_userinfo_in(text: str, url: str) -> str:
    """Mask in ``text`` (a parser's error about ``url``) any piece of ``url``'s userinfo: quoted
    (``'u:p'``), or anywhere once it is long enough (four characters) not to be a common word's
    fragment. URLs in ``text`` are masked too."""
    text = redact_text(text)
    for part in userinfo_parts(url):
        for quote in ("'", '"'):
            text = text.replace(f"{quote}{part}{quote}", f"{quote}{MASK}{quote}")
        if len(part) >= 4:  # shorter ones only when quoted, above
            text = text.replace(part, MASK)
    return text


def _redact_url_text(url: str) -> str:
    starts = [match.start() for match in _SCHEME.finditer(url)]
    if len(starts) > 1:  # kombu's failover form: URL by URL, each to its own last "@"
        bounds = [0, *starts[1:], len(url)]
        pieces = [url[a:b] for a, b in itertools.pairwise(bounds)]
        masked = "".join(_mask_userinfo(piece) for piece in pieces)
    else:
        masked = _mask_userinfo(url)
    if "=" not in masked:
        return masked
    return _QUERY_PARAMETER.sub(_mask_parameter, masked)


def _mask_userinfo(url: str) -> str:
    span = userinfo_span(url)
    if span is None:
        return url
    start, end = span
    if not _AUTHORITY_END.search(url, start, end):
        return _USERINFO.sub(rf"\g<head>:{MASK}@", url)
    # Unparseable: all of it is the userinfo. A user name with no odd character stays readable.
    user, colon, _secret = url[start:end].partition(":")
    shown = f"{user}:" if colon and not _AUTHORITY_END.search(user) else ""
    return f"{url[:start]}{shown}{MASK}{url[end:]}"


def _mask_parameter(match: re.Match[str]) -> str:
    if match.group("lead") != "?" and "?" not in match.string[: match.start()]:
        return match.group(0)  # a ";" or "&" before any "?" is not a query parameter
    if not is_secret_parameter(match.group("name")):
        return match.group(0)
    return f"{match.group('lead')}{match.group('name')}={MASK}"


def redact_event(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: mask URL secrets in every string value, tracebacks included."""
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
