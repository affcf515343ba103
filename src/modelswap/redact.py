"""Redaction in one place: every log event, error line, /status field, fleet report and hook
message passes through `redact` before anyone can read it.

What goes: the userinfo of any URL (`http://user:secret@host` -> `http://***@host`), any URL's
query string (presigned `?X-Amz-Signature=...`), `key=value` pairs whose key names a secret,
bearer and basic credentials, AWS access key ids, and the exact values of the secrets this
process was given (`install`, fed by config.secret_values() from the environment), wherever
they appear. A message loses a little detail; a secret never reaches a log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

MASK = "***"
_SCHEME = r"\b[a-zA-Z][a-zA-Z0-9+.-]*://"
_USERINFO = re.compile(rf"({_SCHEME})[^/\s@'\"<>]+@")
_QUERY = re.compile(rf"({_SCHEME}[^\s?#'\"<>]*)\?[^\s#'\"<>]*")
_SENSITIVE_FIELDS = (
    r"aws_secret_access_key|aws_session_token|secret[_-]?key|secret|password|passwd|pwd|"
    r"token|api[_-]?key|access[_-]?key|signature|credential|x-amz-signature|"
    r"x-amz-credential|x-amz-security-token|sig"
)
_KEY_VALUE = re.compile(rf"(?i)\b({_SENSITIVE_FIELDS})(\s*[=:]\s*)([^\s&'\",;]+)")
_AUTH = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}")
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_MIN_SECRET_LEN = 6  # shorter values would mask ordinary words

_secrets: tuple[str, ...] = ()


def install(values: Iterable[str]) -> None:
    """Also mask these exact values (longest first, so one secret inside another goes too)."""
    global _secrets  # noqa: PLW0603 - one process-wide list, set once at start-up
    keep = {v for v in values if len(v) >= _MIN_SECRET_LEN}
    _secrets = tuple(sorted(keep, key=len, reverse=True))


def redact(text: str) -> str:
    for value in _secrets:
        text = text.replace(value, MASK)
    text = _USERINFO.sub(rf"\g<1>{MASK}@", text)
    text = _QUERY.sub(rf"\g<1>?{MASK}", text)
    text = _KEY_VALUE.sub(rf"\g<1>\g<2>{MASK}", text)
    text = _AUTH.sub(rf"\g<1>\g<2>{MASK}", text)
    return _ACCESS_KEY_ID.sub(MASK, text)


def redact_value(value: Any) -> Any:
    """redact() through strings, lists and dicts (a /status payload, a fleet report)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def structlog_processor(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> Mapping[str, Any]:
    """A structlog processor: every value of every event is redacted before rendering."""
    return {k: redact_value(v) for k, v in event.items()}
