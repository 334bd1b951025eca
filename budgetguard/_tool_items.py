"""The Responses API's built-in tool items that are billed, and the ``Usage`` field each adds to."""

from __future__ import annotations

__all__ = ["BILLED_TOOL_ITEMS", "CONTAINER_SESSIONS"]

CONTAINER_SESSIONS = "code_execution_sessions"
"""The field of the items billed per container session, counted once per container (a shell the caller
runs in its own environment, no hosted container, is not billed)."""

BILLED_TOOL_ITEMS = {
    "web_search_call": "web_search_calls",
    "file_search_call": "file_search_calls",
    "image_generation_call": "image_generation_calls",
    "code_interpreter_call": CONTAINER_SESSIONS,
    "shell_call": CONTAINER_SESSIONS,
}
"""Per item kind, the ``Usage`` field it adds to: the one list of a final output's billed items
(``_usage.with_tool_items``) and of those an interrupted stream keeps (``_providers.StreamFolder``)."""
