"""Alert sinks from a budgets file: ``[[alerts]]`` tables beside ``[[budgets]]``."""

from __future__ import annotations

import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from .._config import read_data_file
from .._errors import ConfigurationError
from .._events import EventKind
from ._delivery import Sink
from ._sinks import Email, Slack, Webhook

__all__ = ["load_alerts"]

_SINKS: dict[str, Callable[..., Sink]] = {"webhook": Webhook, "slack": Slack, "email": Email}
_COMMON = {"kinds", "quiet", "max_queue", "attempts", "backoff", "max_backoff"}
_KEYS = {
    "webhook": {"url", "secret", "headers", "timeout"},
    "slack": {"url", "timeout"},
    "email": {"host", "port", "sender", "to", "username", "password", "starttls", "use_ssl", "timeout",
              "subject_prefix"},
}  # fmt: skip
_KINDS: set[str] = set(EventKind.__args__)  # type: ignore[attr-defined]


def load_alerts(path: str | Path) -> list[Sink]:
    """The alert sinks of a TOML or JSON file's ``alerts`` list, ready for ``Guard(on_event=...)``. Each
    table has a ``type`` (``webhook``, ``slack``, ``email``) and that sink's options; a secret (``url``,
    ``secret``, ``password``) can be read from the environment instead with ``<key>_env = "VARIABLE"``,
    which keeps it out of the file. No ``alerts`` in the file: an empty list. All valid or an error."""
    data = read_data_file(path, "alerts")
    entries = data.get("alerts", []) if isinstance(data, dict) else []
    if not isinstance(entries, list):
        raise ConfigurationError(f"{path}: alerts must be a list of tables, e.g. [[alerts]] type = 'webhook'")
    return [_sink(path, number, entry) for number, entry in enumerate(entries, 1)]


def _sink(path: str | Path, number: int, entry: Any) -> Sink:
    where = f"{path}: alert {number}"
    if not isinstance(entry, dict) or entry.get("type") not in _SINKS:
        raise ConfigurationError(f"{where} needs a type: {', '.join(_SINKS)}")
    kind = entry["type"]
    options: dict[str, Any] = {}
    for key, value in entry.items():
        if key == "type":
            continue
        if key.endswith("_env"):
            name, key = value, key[:-4]
            if not isinstance(name, str) or name not in os.environ:
                raise ConfigurationError(f"{where} ({kind}): {key}_env names {name!r}, which is not set")
            value = os.environ[name]
        if key not in _KEYS[kind] | _COMMON:
            allowed = sorted(_KEYS[kind] | _COMMON)
            raise ConfigurationError(f"{where} ({kind}) has an unknown key {key!r}; use {allowed}")
        options[key] = float(value) if isinstance(value, Decimal) else value
    kinds = options.get("kinds")
    if kinds is not None and (not isinstance(kinds, list) or not set(kinds) <= _KINDS):
        raise ConfigurationError(f"{where} ({kind}): kinds is a list of {sorted(_KINDS)}")
    first = "host" if kind == "email" else "url"
    if first not in options:
        raise ConfigurationError(f"{where} ({kind}) needs {first} (or {first}_env)")
    try:
        return _SINKS[kind](options.pop(first), **options)
    except TypeError as exc:
        raise ConfigurationError(f"{where} ({kind}): {exc}") from exc
