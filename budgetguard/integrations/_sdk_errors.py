"""The guard's errors as the SDKs' own: a refusal the transport raises inside an openai or anthropic
client's HTTP call is made an instance of the SDKs' root errors too, so that the SDK raises it as it is
(unretried, not turned into its connection error), still the guard's error with its attributes.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, cast

from .._errors import BudgetGuardError

__all__ = ["as_sdk_error"]


@functools.cache
def _sdk_class(error: type, roots: tuple[type, ...]) -> type:
    """``error``'s class that is also the SDKs' root errors; pickled as ``error`` itself (its class is
    made here, at run time: no module holds it by name)."""

    def __reduce__(self: Any) -> Any:
        self.__class__ = error
        try:
            return self.__reduce__()
        finally:
            self.__class__ = sdk

    names = {"__module__": error.__module__, "__qualname__": error.__qualname__, "__doc__": error.__doc__}
    sdk = type(error.__name__, (error, *roots), {**names, "__reduce__": __reduce__})
    return sdk


def as_sdk_error(error: BudgetGuardError) -> BudgetGuardError:
    """``error`` as the root error of the SDKs loaded too (``openai.OpenAIError``,
    ``anthropic.AnthropicError``): the openai (2 and later) and anthropic SDKs raise their own errors
    from their HTTP client as they are, where they retry any other and raise it as their
    ``APIConnectionError``. Still the guard's error (``BudgetExceededError``...), with its attributes."""
    roots = tuple(
        root
        for module, name in (("openai", "OpenAIError"), ("anthropic", "AnthropicError"))
        if isinstance(root := getattr(sys.modules.get(module), name, None), type)
    )
    if not roots:
        return error
    error.__class__ = _sdk_class(cast(type, type(error)), roots)
    return error
