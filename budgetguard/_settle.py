"""Settling one attempt's reservation: commit what it cost (or release it), and the events that tell it.

``Ctx`` is an attempt's bookkeeping: it emits the attempt's events (``reserved``, ``committed``,
``threshold``, ``spend_lost``...), decides what a store failure means (fail closed or open), and its
``settle`` is the flow step that prices the usage and commits it: the call flow, a stream's settlement
and a job's end all settle through it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Generator, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ._actions import LATE, Action, Draw, Resolve
from ._budgets import Unit
from ._cache import memo
from ._context import Tracker, open_trackers, record_hold, record_usage
from ._core import GuardCore
from ._errors import LedgerError, PricingError
from ._estimate import Estimate
from ._events import Event, EventKind, emit, wanted
from ._ledger import Hold, Outcome, Reservation
from ._ledger._meta import USAGE, pack_usage
from ._ledger._types import CheckedAmounts, JournalData, Refusal, ReservationError
from ._limits import answers_as
from ._money import INT64_MAX, to_usd
from ._price_data import LOCATION_KEYS, UNKNOWN_DEPLOYMENT
from ._pricing import PriceBook
from ._providers import api_of, may_reason, response_variant
from ._tokens import count_text_tokens
from ._usage import Usage

__all__ = ["LATE", "Ctx", "chat_searched", "input_only", "received", "resolve", "served_flags"]


def resolve(
    reservation: Reservation, actual: Mapping[Unit, int] | None, meta: Mapping[str, Any],
    reserved: Mapping[str, Any],
) -> Generator[Action, Any, tuple[Reservation, Outcome | None]]:  # fmt: skip
    """Commit (or release, ``actual`` None) ``reservation``, reserved with journal data ``reserved``: the
    reservation charged and its outcome.

    A call that outlives its lease and the record's retention (``RECORD_RETENTION_MS``) finds the store
    no longer knows its reservation (its hold was reclaimed when the lease ended): a release has nothing
    left to do (outcome None), a commit is charged anyway, as a late charge (``Late``). A store failure
    (``LedgerError``) is raised, as for any commit."""
    action = Resolve(reservation, actual, meta, reserved)
    try:
        return reservation, (yield action)
    except ReservationError:
        late = action.late()
        if late is None:
            if isinstance(reservation, Draw):  # a job's hold, in memory: it forgets nothing
                raise
            return reservation, None
    charged: tuple[Reservation, Outcome] = yield late
    return charged


class Ctx:
    """One attempt's bookkeeping: events, settling its reservation, and what to do when the store fails."""

    __slots__ = ("attempt", "est", "guard", "labels", "lost", "meta", "reservation_id", "started", "trackers")

    def __init__(self, guard: GuardCore, est: Estimate, labels: tuple[str, ...], attempt: int) -> None:
        self.guard, self.est, self.labels, self.attempt = guard, est, labels, attempt
        self.reservation_id: str | None = None
        self.meta: Mapping[str, Any] = {}
        """The reservation's journal data (model, scopes...), for a late charge to journal again."""
        self.lost = False  # fail_open admitted this attempt without a reservation
        self.started = time.monotonic()
        self.trackers: tuple[Tracker, ...] = open_trackers()
        """The ``track()`` trackers open when the attempt began: they count its hold till it settles, and
        its cost, in whatever context it settles (a dropped stream: the guard's next operation's)."""

    def held(self, nano: int) -> None:
        """The attempt was admitted, holding ``nano``: its trackers count it until it settles."""
        record_hold(self.trackers, self, nano)

    def unhold(self) -> None:
        for tracker in self.trackers:
            tracker.settled(self)

    @property
    def model(self) -> str | None:
        return self.est.model

    @property
    def estimated(self) -> Decimal | None:
        return self.est.cost

    def emit(
        self, kind: EventKind, *, actual: int | None = None, reason: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        if not wanted(kind, self.guard.hooks):
            return
        emit(
            Event(
                kind=kind,
                model=self.model,
                scopes=self.labels,
                reservation_id=self.reservation_id,
                attempt=self.attempt,
                estimated=self.estimated,
                actual=None if actual is None else to_usd(actual),
                reason=reason,
                data=data or {},
            ),
            self.guard.hooks,
        )

    def shadowed(self, refusal: Refusal, holds: Sequence[Hold]) -> None:
        """Say that a reservation admitted in shadow would have been refused (``Reservation.shadowed``):
        the refusal's scope, unit, period and amounts as ``BudgetExceededError`` gives them."""
        if wanted("shadow_refused", self.guard.hooks):
            would = refusal.error(holds)
            fields = ("scope", "unit", "period", "limit", "spent", "held", "requested")
            self.emit("shadow_refused", reason=would.reason, data={k: getattr(would, k) for k in fields})

    def store_down(self, down: LedgerError) -> None:
        """Fail closed (raise) or open (go on), as configured; either way, say so."""
        if self.guard.on_store_error == "fail_closed":
            self.emit("store_unavailable", reason=str(down))
            raise down
        self.emit("store_unavailable", reason=f"fail_open: {down}")

    def settle(
        self, reservation: Reservation | None, usage: Usage | None, flags: Mapping[str, Any],
        *, retry: bool = False, recorded: bool = False,
    ) -> Generator[Action, Any, None]:  # fmt: skip
        """Commit ``usage`` (or release when None). The call already happened: a store failure here
        cannot undo it. It is reported as lost spend (the hold expires after its lease) and, when
        failing closed, raised. With ``retry`` (a dropped stream's settlement, which its drain retries)
        it is raised, reported ``store_unavailable`` with ``will_retry``, and not lost yet; ``recorded``:
        an earlier try recorded the usage with the trackers."""
        variant, model = flags.get("variant", self.est.variant), flags.get("priced_as", self.est.model)
        usage = None if usage is None else chat_searched(usage, self.est)
        try:
            actual = None if usage is None else self.guard.actual(model, usage, self.est, variant)
        except PricingError as unpriced:  # a billed unit with no price: the reserved worst case, flagged
            self.emit("usage_missing", reason=str(unpriced))
            usage, actual = self.est.usage, self._reserved()
            flags = {**flags, "usage_missing": True, "unpriced": str(unpriced)}
        if actual is not None and max(actual.values()) > INT64_MAX:  # absurd counts: a corrupt response
            self.emit("usage_missing", reason=f"usage {usage} is beyond what a ledger counts")
            usage, actual, flags = self.est.usage, self._reserved(), {**flags, "usage_missing": True}
        cost = None if actual is None else actual[Unit.USD]
        reserved_at = self.est.variant
        if reserved_at is not None and reserved_at.get("deployment") == UNKNOWN_DEPLOYMENT:
            self._unknown_deployment()
        served_at = flags.get("variant")  # (reserved at no tier, served at one: standard where the call ran)
        if (
            served_at
            and "service_tier" in served_at
            and (reserved_at is None or reserved_at.keys() <= LOCATION_KEYS)
        ):
            self._unreserved_tier(model, served_at)
        if usage is not None and not recorded:
            record_usage(self.trackers, self.est.model, usage, actual[Unit.USD] if actual else 0)
        self.unhold()
        if reservation is None:
            if self.lost and cost is not None:
                self.emit("spend_lost", actual=cost, reason="fail_open: the store was unavailable")
            return
        meta = JournalData(flags)
        if actual is not None and usage is not None:  # its cost_nano: the amounts' usd, always committed
            meta[USAGE] = pack_usage(usage.to_dict())  # (compact: see _ledger._meta)
        try:
            charged, outcome = yield from resolve(reservation, actual, meta, self.meta)
        except LedgerError as down:
            if retry:  # retried by the guard's next operation, close() or exit: not lost (yet)
                self.emit("store_unavailable", actual=cost, reason=str(down), data={"will_retry": True})
                raise
            self.emit("store_unavailable", reason=str(down))
            self.emit("spend_lost", actual=cost, reason=f"could not record: {down}")
            if self.guard.on_store_error == "fail_closed":
                raise
            return
        late = {"late": True} if charged is not reservation else None
        kind: EventKind = "released" if actual is None else "committed"
        if wanted(kind, self.guard.hooks):
            data = {**flags, **self._settled(usage, charged, outcome), **(late or {})}
            self.emit(kind, actual=cost, reason=flags.get("error"), data=data)
        if outcome is not None and (outcome.overrun or late):
            self.emit("overrun", actual=cost, reason=LATE if late else None, data=late)
        if outcome is not None and actual is not None:
            # a repeat's outcome too: the guard commits a reservation once, so a repeat reaches it only
            # when the store's retry found its lost first write; it carries that commit's totals
            self._thresholds(charged, outcome.charged or actual, outcome.spent)

    def _unknown_deployment(self) -> None:
        """Say, once per guard and model, that an Azure deployment of unknown type is charged as the
        dearest type (``PriceBook.deployment_variant``), and how to declare its type."""
        model = self.est.model
        if not wanted("unknown_deployment", self.guard.hooks) or not self.guard.first_time(
            "unknown_deployment", model
        ):
            return
        self.emit(
            "unknown_deployment",
            reason=f"{model!r} goes to an Azure OpenAI deployment of unknown type: reserved and charged as "
            "Regional, the dearest type (1.375x Azure's Global price). Declare the type to be charged what "
            "you are billed: budgetguard.set_azure_deployment('global') when your deployments are Global "
            f"Standard (or 'data_zone', 'regional'), or budgetguard.register_price({model!r}, "
            "provider='azure', deployment='data_zone') for this one (on your own PriceBook: its "
            "set_azure_deployment and register)",
            data={"charged_as": "regional"},
        )

    def _unreserved_tier(self, model: str, served_at: Mapping[str, str]) -> None:
        """Say so when a call reserved at standard prices was served at a dearer service tier: the
        project's default tier, most likely, which ``default_service_tier`` reserves at (the charge is
        right). Not where the call ran (a geo the response reports): no tier setting reserves that."""
        tier, est = served_at["service_tier"], self.est
        try:
            served = self.guard.prices.get(model, provider=est.provider, variant=served_at).base
        except PricingError:  # (charged at the reserved worst case, flagged unpriced)
            return
        if served.input <= est.price.base.input and served.output <= est.price.base.output:
            return  # (flex, or a tier priced as standard)
        self.emit(
            "unreserved_tier",
            reason=f"reserved at standard prices, served and charged at service_tier {tier!r}; if your "
            f"OpenAI project's default tier is {tier!r}, set Guard(default_service_tier={tier!r}) (or "
            f"Estimator(default_service_tier={tier!r}) on your own estimator) so requests that name no "
            "tier reserve at it",
            data={"served_tier": tier},
        )

    def _reserved(self) -> dict[Unit, int]:
        """What the reservation held, as the actual amounts: the worst case, charged when the response's
        usage cannot be priced. No price lookup: it cannot fail after the provider has billed."""
        est = self.est
        tokens = est.total_tokens
        return CheckedAmounts({Unit.USD: est.cost_nano, Unit.TOKENS: tokens, Unit.REQUESTS: 1})

    def _settled(
        self, usage: Usage | None, reservation: Reservation, outcome: Outcome | None
    ) -> dict[str, Any]:
        """What a committed or released event carries: the call's duration (seconds, from before its
        reservation), its usage, and each counter's spent amount and limit after the commit, with the
        window (store clock, UTC ms) that spent belongs to."""
        data: dict[str, Any] = {"duration": time.monotonic() - self.started}
        if usage is not None:
            data["usage"] = usage
        if outcome is not None and outcome.spent:
            data["counters"] = tuple(
                {"scope": str(h.counter.scope), "unit": h.counter.unit.value,
                 "period": h.counter.period.value, "tz": h.counter.tz, "spent": spent, "limit": h.limit,
                 "window_start": h.window_start, "window_end": h.window_end}
                for h, spent in zip(reservation.held, outcome.spent, strict=False)
            )  # fmt: skip
        return data

    def _thresholds(self, reservation: Reservation, actual: Mapping[Unit, int], after: Sequence[int]) -> None:
        """A "threshold" event for each threshold this commit carried a counter across. Spent only grows
        within a window, so exactly one commit crosses each threshold: once per window, fleet-wide (its
        answer, first or repeated after a lost reply, reaches the one caller that committed it)."""
        thresholds = self.guard.thresholds
        if not thresholds:
            return
        low_num, low_den = _lowest(thresholds)
        for held, spent in zip(reservation.held, after, strict=False):
            spec, limit = held.counter, held.limit
            if not limit or spent * low_den < low_num * limit:
                continue  # below the lowest threshold: none crossed (the common case)
            before = spent - actual[spec.unit]
            for num, den in thresholds:
                if before * den < num * limit <= spent * den:
                    level = f"{(Decimal(num) * 100 / den).normalize():f}%"
                    budget = f"{spec.period.value} {spec.unit.value} budget"
                    self.emit(
                        "threshold",
                        reason=f"{spec.scope} reached {level} of its {budget}",
                        data={"scope": str(spec.scope), "threshold": level, "spent": spent, "limit": limit,
                              "unit": spec.unit.value, "period": spec.period.value},
                    )  # fmt: skip


@memo("guard.lowest_threshold", 64)
def _lowest(thresholds: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The lowest of a guard's thresholds (fractions as numerator, denominator)."""
    return min(thresholds, key=lambda t: Fraction(*t))


def served_flags(
    tier: str | None, est: Estimate, model: str | None = None, prices: PriceBook | None = None
) -> dict[str, Any]:
    """Journal flags when the response reports another price variant or another model than the ones
    reserved: ``variant`` / ``served_tier``, ``served_model``, and ``priced_as`` (the model charged)
    when the answering model's price differs (not when the asked model has a configured price: that
    price stands). When the price data has no price for what was served, the reserved price is
    charged and ``unpriced`` says why."""
    variant = response_variant(tier, est.variant)
    flags: dict[str, Any] = {}
    if variant != est.variant:
        flags = {"variant": None if variant is None else dict(variant), "served_tier": tier}
    charged = None
    if model and model != est.model and not answers_as(est.model, model):
        flags["served_model"] = model
        if est.price.source not in ("override", "default"):
            charged = model
    if prices is not None and (charged is not None or "variant" in flags):
        try:
            price = prices.get(charged or est.model, provider=est.provider, variant=variant)
        except PricingError as exc:
            flags.pop("variant", None)
            flags["unpriced"] = str(exc)
            charged = None
        else:
            price = price.with_request(est.price, est.fees)  # (the request's own fees: compared as charged)
            if variant == est.variant and (price.base, price.tiers) == (est.price.base, est.price.tiers):
                charged = None  # an alias of the model asked (gpt-4o, gpt-4o-2024-08-06): the same price
    if charged is not None:
        flags["priced_as"] = charged
    return flags


def input_only(est: Estimate) -> Usage:
    """What a call that reported no usage (a stream that ended without it, a failure after the request
    was sent) is charged at the least: its estimated input, and a chat search model's search, which it
    runs for every request before it answers (its fee is ~100x a short question's tokens)."""
    usage = est.usage
    return Usage(
        input_tokens=usage.input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        web_search_calls=1 if est.price.chat_search(est.provider) is not None else 0,
    )


def received(
    est: Estimate,
    base: Usage | None,
    text: str,
    model: str,
    *,
    thinking: bool,
    factor: Decimal,
    background: bool = False,
) -> tuple[Usage, dict[str, Any]]:
    """What a stream that ended or broke off without its final usage is charged, and its journal flags.

    A Responses API ``background`` response runs on server-side to its end, billed whole: its reserved
    worst case. Otherwise:
    Input: the provider's count if it sent one (``base``: Anthropic's ``message_start``), else the
    estimate (``input_only``). Output: the larger of a partial count and the streamed ``text`` (thinking
    included) counted with tiktoken, times ``factor`` for Claude (its tokenizer is not public; never
    past max_tokens, which caps the bill). A model that reasons without streaming its reasoning (o-series,
    gpt-5, ...; a Claude stream that showed ``thinking``: Claude 4 streams a summary of the thinking it
    bills) may have consumed up to its whole output bound: that worst case, flagged; so may one that
    speaks (audio output), all of it at the audio rate. ``model``: the model that answered."""
    if background:
        return est.usage, {"usage_missing": True, "background": True}
    streamed = count_text_tokens(text, est.model) if text else 0
    claude = api_of(None, model) == "anthropic"
    if streamed and claude:
        streamed = min(math.ceil(streamed * factor), max(est.output_tokens, streamed))
    base = base if base is not None else input_only(est)
    output = max(base.output_tokens, streamed)
    flags: dict[str, Any] = {"usage_missing": True}
    if thinking if claude else may_reason(model):
        output = max(output, est.output_tokens)
        flags["reasoning_worst_case"] = True
    spoke = est.audio_output  # (its speech is base64 in the stream, uncounted: the bound, as audio)
    if spoke:
        output = max(output, est.output_tokens)
        flags["audio_worst_case"] = True
    text_out, speech = (0, output) if spoke else (output, 0)
    usage = dataclasses.replace(base, output_tokens=text_out, output_audio_tokens=speech, reasoning_tokens=0)
    return usage, flags


def chat_searched(usage: Usage, est: Estimate) -> Usage:
    """``usage`` with a chat search model's search as the call's price and provider decide
    (``Price.chat_search``, the estimate's rule): the usage reader counts it by the answer's model name
    at every provider (it reads none, ``Usage.from_response``), and not where the answer names the
    deployment. A review found a search charged at hosts that bill none (Together, Groq: $35 per 1k
    nobody reserved) and reserved for none on an Azure deployment named otherwise."""
    searched = est.price.chat_search(est.provider) is not None
    if searched and not usage.web_search_calls:
        return dataclasses.replace(usage, web_search_calls=1)
    if (
        not searched and usage.web_search_calls and est.price.chat_search(None) is not None
    ):  # (a search by name alone)
        return dataclasses.replace(usage, web_search_calls=0)
    return usage
