"""`repobox config`: every setting of the table (`settings.SETTINGS`) with the value `run` would
use and where it came from (option, env, file, default); secrets never shown."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from repobox_cli.crypto import EncryptionKey
from repobox_cli.settings import SETTINGS, AgentUser, Setting, Settings, Source

_URL_PASSWORD_RE = re.compile(r"(://[^/@:]*:)[^/@]*@")


@dataclass(frozen=True)
class ShownSetting:
    env: str
    value: str  # secrets masked
    source: Source


def without_passwords(text: str) -> str:
    """`text` with the password of any `scheme://user:password@…` masked."""
    return _URL_PASSWORD_RE.sub(r"\1****@", text)


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, EncryptionKey):
        return f"set ({value.key_format})"
    if isinstance(value, AgentUser):
        return f"{value.name} (uid {value.uid})"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        parts = [f"{p[0]}:{p[1]}" if isinstance(p, tuple) else str(p) for p in value]
        return ",".join(parts) or "empty"
    if isinstance(value, Path):
        return str(value)
    return str(value) if value != "" else "empty"


def _field_value(settings: Settings, setting: Setting) -> Any:
    return getattr(settings.redis if setting.group == "redis" else settings, setting.field, None)


def _value(settings: Settings, setting: Setting, source: Source, raw: str | None) -> str:
    value = _field_value(settings, setting)
    if setting.secret:
        if isinstance(value, EncryptionKey):
            return _shown(value)  # its format only
        return "set (hidden)" if source is not Source.DEFAULT or raw else "not set"
    if setting.env.endswith("_FILE") and setting.default is None:
        return raw or "none"  # the file's path; what it holds shows (masked) on its secret's row
    if setting.field == "tick_s" and raw is not None:
        return raw  # declared in ms, held in seconds: show it as declared
    return without_passwords(_shown(value))


def effective_settings(settings: Settings, sources: Mapping[str, tuple[Source, str | None]]) -> list[ShownSetting]:
    """One row per setting of the table, in its order."""
    rows = []
    for setting in SETTINGS:
        source, raw = sources[setting.env]
        rows.append(ShownSetting(setting.env, _value(settings, setting, source, raw), source))
    return rows
