"""Retry policy: which failures are retried, how long to wait, when to stop, from tenacity's public pieces.

The guard owns its retry loop (it reserves before every attempt and reconciles after it, see ``_flow``);
tenacity decides. A policy is read from a ``tenacity.Retrying`` / ``AsyncRetrying`` (its ``stop``, ``wait``,
``retry``, ``before``, ``after``, ``before_sleep``, ``reraise``, ``retry_error_cls`` and
``retry_error_callback``), or from the strategies themselves (``Guard(stop=..., wait=..., retry=...)``),
and driven only through tenacity's public API: the strategies are callables of a ``RetryCallState``.
Nothing here calls ``Retrying.iter`` or reads its statistics, so a tenacity release that reworks its own
loop cannot change what a call is charged.
"""

from __future__ import annotations

import inspect
import sys
from typing import TYPE_CHECKING, Any

from ._errors import BudgetExceededError, ConfigurationError, UsageError

if TYPE_CHECKING:  # (imported by _load, at the first policy)
    import tenacity
    from tenacity import RetryCallState

    _DEFAULT_STOP: tenacity.stop.stop_base
    _DEFAULT_WAIT: tenacity.wait.wait_base
    _DEFAULT_RETRY: tenacity.retry_base
    _WAIT_FIRST: bool
    _QUIET_ON_SUCCESS: tuple[Any, ...]

__all__ = [
    "alone_first", "before", "charge_if_maybe_billed", "checked", "decide", "default_retry", "retry_policy",
    "start",
]  # fmt: skip


def _retryable(exc: BaseException) -> bool:
    """Rate limits, timeouts, connection errors and 5xx: worth another attempt. Never other 4xx."""
    if isinstance(exc, BudgetExceededError | ConfigurationError | UsageError):
        return False
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status == 429 or status == 408 or status >= 500
    return in_transit(exc)


def in_transit(exc: BaseException) -> bool:
    """A timeout or a dropped connection: the SDKs' errors (or subclasses of them, such as
    langchain-openai's ``OpenAITimeoutError``) or the standard library's."""
    return isinstance(exc, TimeoutError | ConnectionError) or any(
        cls.__name__ in ("APITimeoutError", "APIConnectionError") for cls in type(exc).__mro__
    )


def charge_if_maybe_billed(exc: BaseException) -> bool:
    """Default policy for a failed attempt: charge its input when the provider may have billed it.

    A timeout or a dropped connection after the request was sent may still be processed (and billed),
    and so may a call whose task was cancelled (``asyncio.wait_for``, a client that went away); an
    error response (4xx, 5xx) is not billed by OpenAI or Anthropic, so its hold is released.
    """
    if in_transit(exc):
        return True
    # asyncio is not imported here (it costs more than budgetguard's own import): without it in
    # sys.modules, no task exists and no exception can be its CancelledError
    aio = sys.modules.get("asyncio")
    return aio is not None and isinstance(exc, aio.CancelledError)


def _load() -> None:
    """Import tenacity (~10 ms with concurrent.futures and logging) and what is read from it: at the
    first policy made or checked (a guard's first guarded call, or a guard given a policy), not at
    ``import budgetguard``. Every policy the flow drives went through here (``checked``)."""
    global tenacity, RetryCallState, _WAIT_FIRST, _QUIET_ON_SUCCESS
    global _DEFAULT_STOP, _DEFAULT_WAIT, _DEFAULT_RETRY
    if "_QUIET_ON_SUCCESS" in globals():  # (set last: the rest is set too)
        return
    import tenacity
    from tenacity import RetryCallState

    _DEFAULT_STOP = tenacity.stop_after_attempt(3)
    _DEFAULT_WAIT = tenacity.wait_random_exponential(multiplier=0.5, max=8)
    _DEFAULT_RETRY = tenacity.retry_if_exception(_retryable)
    _WAIT_FIRST = hasattr(RetryCallState(tenacity.Retrying(), None, (), {}), "upcoming_sleep")
    """Whether this tenacity asks the wait strategy before the stop strategy (it does since 8.3)."""
    _QUIET_ON_SUCCESS = (tenacity.retry_if_exception.__call__, type(tenacity.retry_never).__call__)


def default_retry() -> tenacity.Retrying:
    """3 attempts, exponential backoff with jitter (0.5 s .. 8 s), on retryable errors only."""
    _load()
    return tenacity.Retrying(stop=_DEFAULT_STOP, wait=_DEFAULT_WAIT, retry=_DEFAULT_RETRY, reraise=True)


def retry_policy(retry: Any = None, stop: Any = None, wait: Any = None) -> tenacity.BaseRetrying:
    """The ``Retrying`` a guard keeps: the one given, or the default one with the strategies given
    (``retry=`` a ``retry_*`` strategy, ``stop=``, ``wait=``) in place of its own."""
    _load()
    if isinstance(retry, tenacity.BaseRetrying):
        if stop is not None or wait is not None:
            raise ConfigurationError(
                "retry= is a whole tenacity.Retrying here: put stop= and wait= inside it, or pass the "
                "strategies alone (retry=tenacity.retry_if_exception_type(...), stop=..., wait=...)"
            )
        return retry
    for name, given in (("retry", retry), ("stop", stop), ("wait", wait)):
        if given is not None and (not callable(given) or _kind(given) not in (None, name)):
            raise ConfigurationError(
                f"{name}= takes a tenacity.Retrying or AsyncRetrying, or a tenacity {name}_* strategy, "
                f"got {given!r}"
                if name == "retry"
                else f"{name}= takes a tenacity {name}_* strategy, got {given!r}"
            )
    return tenacity.Retrying(
        stop=stop or _DEFAULT_STOP, wait=wait or _DEFAULT_WAIT, retry=retry or _DEFAULT_RETRY, reraise=True
    )


def _kind(strategy: Any) -> str | None:
    """Which of tenacity's strategy kinds ``strategy`` is (None: a plain function, any of them)."""
    for name, base in (("retry", tenacity.retry_base), ("stop", tenacity.stop.stop_base)):
        if isinstance(strategy, base):
            return name
    return "wait" if isinstance(strategy, tenacity.wait.wait_base) else None


_HOOKS = ("stop", "wait", "retry", "before", "after", "before_sleep", "retry_error_callback")


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def alone_first(retrying: tenacity.BaseRetrying) -> bool:
    """Whether tenacity would do nothing around a first attempt that succeeds but return its result: no
    ``before`` hook, and a ``retry`` strategy that never retries a result (``retry_if_exception`` and its
    subclasses that keep its ``__call__``, ``retry_never``), or a policy that is not ``enabled`` (tenacity
    >= 9). The flow then makes its first attempt without a ``RetryCallState``, and builds one on the first
    failure only."""
    return not getattr(retrying, "enabled", True) or (
        retrying.before in (None, tenacity.before_nothing)
        and type(retrying.retry).__call__ in _QUIET_ON_SUCCESS
    )


def start(retrying: tenacity.BaseRetrying, started: float) -> RetryCallState:
    """The state of one call, on its own copy of the policy (whose ``statistics`` are the call's, as in
    tenacity), its first attempt started at ``started`` (``time.monotonic()``)."""
    own = retrying.copy()
    own.begin()
    own.statistics["start_time"] = started
    state = RetryCallState(own, None, (), {})
    state.start_time = started
    return state


def before(state: RetryCallState) -> None:
    """Before each attempt made with a state: the policy's ``before`` hook."""
    hook = state.retry_object.before
    if hook is not None and hook is not tenacity.before_nothing:
        hook(state)


def decide(state: RetryCallState) -> float | tuple[Any]:
    """After an attempt's outcome is set on ``state``: the seconds to wait before the next attempt, or
    ``(value,)`` to end the call with (the result, or the ``retry_error_callback``'s value). Raises the
    attempt's error when it is not retried, and ``RetryError`` (or the error, with ``reraise``) when the
    policy stops. tenacity's own steps in its own order: retry?, after, wait, stop?, before_sleep (stop
    before wait until 8.3), the policy's strategies read as they are now."""
    policy, outcome = state.retry_object, state.outcome
    assert outcome is not None
    explicit = outcome.failed and isinstance(outcome.exception(), tenacity.TryAgain)
    if not getattr(policy, "enabled", True) or not (explicit or policy.retry(state)):
        return (outcome.result(),)  # (raises the attempt's error)
    if policy.after is not None and policy.after is not tenacity.after_nothing:
        policy.after(state)
    if _WAIT_FIRST:  # tenacity >= 8.3 asks wait first, so that stop can read the upcoming sleep
        sleep = state.upcoming_sleep = _wait(policy, state)
    policy.statistics["delay_since_first_attempt"] = state.seconds_since_start
    if policy.stop(state):
        if policy.retry_error_callback is not None:
            return (policy.retry_error_callback(state),)
        error = policy.retry_error_cls(outcome)
        if policy.reraise:
            error.reraise()
        raise error from outcome.exception()
    if not _WAIT_FIRST:
        sleep = _wait(policy, state)
    state.next_action = tenacity.RetryAction(sleep)
    state.idle_for += sleep
    policy.statistics["idle_for"] += sleep
    policy.statistics["attempt_number"] += 1
    if policy.before_sleep is not None:
        policy.before_sleep(state)
    return sleep


def _wait(policy: tenacity.BaseRetrying, state: RetryCallState) -> float:
    return float(policy.wait(state)) if policy.wait is not None else 0.0


def checked(retrying: tenacity.BaseRetrying) -> tenacity.BaseRetrying:
    """``retrying``'s pieces, checked: plain functions only (the guard decides retries between the
    attempts of sync and async calls alike, where nothing is awaited)."""
    _load()
    if not isinstance(retrying, tenacity.BaseRetrying):
        raise ConfigurationError(f"retry= takes a tenacity.Retrying or AsyncRetrying, got {retrying!r}")
    awaited = [name for name in _HOOKS if _is_async(getattr(retrying, name, None))]
    if awaited:
        raise ConfigurationError(
            f"retry=: the policy's {', '.join(awaited)} callback is async; the guard decides retries "
            "between attempts, where nothing is awaited: pass plain functions (tenacity's stop_*, wait_*, "
            "retry_* and your own def hooks), in a Retrying or an AsyncRetrying"
        )
    return retrying
