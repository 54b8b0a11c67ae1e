"""The one place that knows which secrets are live and masks every form of them in text.

Every log line, job output line, error_message and exception text passes through `redact`.
A token is masked raw, URL-encoded, and inside a base64 `Authorization: Basic` value.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, quote_plus

from repobox_cli.crypto import mask_token

GIT_USERNAME = "oauth2"
MIN_SECRET_CHARS = 4  # shorter "secrets" would mask ordinary words

_lock = threading.RLock()  # re-entered if a signal handler logs mid-redaction
_live: dict[str, int] = {}  # secret form -> reference count
_masks: dict[str, str] = {}


def basic_auth_value(token: str) -> str:
    """The base64 part of `Authorization: Basic ...` for the oauth2 user and this token."""
    return base64.b64encode(f"{GIT_USERNAME}:{token}".encode()).decode("ascii")


def secret_forms(token: str) -> list[str]:
    """Every form in which the token could appear in text."""
    forms = {
        token,
        quote(token, safe=""),
        quote_plus(token),
        basic_auth_value(token),
        base64.b64encode(token.encode()).decode("ascii"),
    }
    return sorted((f for f in forms if len(f) >= MIN_SECRET_CHARS), key=len, reverse=True)


@contextmanager
def registered(token: str) -> Iterator[None]:
    """Mask every form of `token` in all redacted text while the block runs."""
    forms = secret_forms(token)
    with _lock:
        for form in forms:
            _live[form] = _live.get(form, 0) + 1
            _masks[form] = mask_token(token) if form == token else "****"
    try:
        yield
    finally:
        with _lock:
            for form in forms:
                _live[form] -= 1
                if _live[form] == 0:
                    del _live[form]
                    del _masks[form]


def redact(text: str) -> str:
    """`text` with every live secret form masked."""
    with _lock:
        if not _live:
            return text
        pairs = sorted(_masks.items(), key=lambda kv: len(kv[0]), reverse=True)
    for form, mask in pairs:
        if form in text:
            text = text.replace(form, mask)
    return text


def one_line(text: str, limit: int = 500) -> str:
    """Redacted, on one line, at most `limit` characters: fit for error_message and logs."""
    flat = " ".join(redact(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
