"""The Responses API's built-in tool items that are billed, and the ``Usage`` field each adds to."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BILLED_TOOL_ITEMS", "CONTAINER_SESSIONS", "Billed"]

CONTAINER_SESSIONS = "code_execution_sessions"
"""The field of the items billed per container session, counted once per container (a shell the caller
runs in its own environment, no hosted container, is not billed)."""


@dataclass(frozen=True, slots=True)
class Billed:
    """How an item kind is billed: one ``unit`` per item, or per container (``CONTAINER_SESSIONS``)."""

    unit: str
    within: str | None = None
    """The item's field that names its container (its ``container_id``), ``None``: the item itself; the
    item's ``id`` where no container id is given."""
    hosted: tuple[str, str] | None = None
    """``(field, value)`` of ``within`` that a billed (hosted) container has; ``None``: every one."""


BILLED_TOOL_ITEMS = {
    "web_search_call": Billed("web_search_calls"),
    "file_search_call": Billed("file_search_calls"),
    "image_generation_call": Billed("image_generation_calls"),
    "code_interpreter_call": Billed(CONTAINER_SESSIONS),
    "shell_call": Billed(CONTAINER_SESSIONS, "environment", ("type", "container_reference")),
}
"""Per item kind, how it is billed: the one list of a final output's billed items
(``_usage.with_tool_items``) and of those an interrupted stream keeps (``_providers.StreamFolder``)."""
