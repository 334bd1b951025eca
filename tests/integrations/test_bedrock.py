"""``guard.wrap(AnthropicBedrock())``: the real SDK client (SigV4-signed by botocore with fake credentials,
which the local handler does not check) against a handler serving Bedrock's wire format: JSON for
``/model/{id}/invoke``, AWS event-stream frames (base64 Anthropic events) for
``/model/{id}/invoke-with-response-stream``. The frame decoder is tested on frames built by hand here,
which botocore's own decoder (the SDK's) reads too. The ledger is checked to the nano-USD at Bedrock's
(genai-prices ``aws``) prices."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from anthropic.lib.bedrock._stream_decoder import AWSEventStreamDecoder
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

import budgetguard as bg
from budgetguard import BudgetExceededError, ConfigurationError, PricingError
from budgetguard.integrations._eventstream import (
    MAX_HEADERS,
    MAX_PAYLOAD,
    FrameError,
    bedrock_event,
    read_frame,
)
from budgetguard.integrations.httpx import BudgetTransport
from budgetguard.testing import MockProvider
from tests.guard.payloads import CLAUDE_USAGE, MESSAGES
from tests.sdk_http import ANTHROPIC_HTTP, http_for
from tests.sdk_payloads import anthropic_message, anthropic_stream_events

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
GLOBAL = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
JSON = dict[str, Any]


# -- AWS event-stream frames, built by hand ------------------------------------------------------

Header = tuple[int, Any]
"""A header's value type (AWS's numbering) and value."""


def header_bytes(name: str, kind: int, value: Any) -> bytes:
    out = bytes([len(name.encode())]) + name.encode() + bytes([kind])
    fixed = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}
    if kind in (0, 1):
        return out
    if kind in fixed:
        return out + struct.pack(fixed[kind], value)
    if kind in (6, 7):
        data = value.encode() if kind == 7 else value
        return out + struct.pack(">H", len(data)) + data
    assert kind == 9 and len(value) == 16
    return out + value


def frame(headers: dict[str, Header], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (lengths and their CRC32), headers, payload, CRC32."""
    raw_headers = b"".join(header_bytes(name, kind, value) for name, (kind, value) in headers.items())
    return framed(raw_headers + payload, len(raw_headers))


def framed(body: bytes, headers_length: int, total: int | None = None) -> bytes:
    """``body`` (headers and payload) framed with checksums that match, whatever lengths it declares."""
    total = 12 + len(body) + 4 if total is None else total
    prelude = struct.pack(">II", total, headers_length)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + body
    return message + struct.pack(">I", zlib.crc32(message))


def chunk(event: JSON) -> bytes:
    """A Bedrock ``chunk`` event carrying one Anthropic stream event (with Bedrock's ``p`` padding)."""
    payload = {"bytes": base64.b64encode(json.dumps(event).encode()).decode(), "p": "abcdefghijklmnopq"}
    headers = {":event-type": (7, "chunk"), ":content-type": (7, "application/json"),
               ":message-type": (7, "event")}  # fmt: skip
    return frame(headers, json.dumps(payload).encode())


def exception(kind: str, message: str) -> bytes:
    headers = {":exception-type": (7, kind), ":content-type": (7, "application/json"),
               ":message-type": (7, "exception")}  # fmt: skip
    return frame(headers, json.dumps({"message": message}).encode())


def bedrock_events() -> list[JSON]:
    """A Claude stream as Bedrock sends it: the Anthropic events, ``message_stop`` carrying Bedrock's
    invocation metrics (which the guard does not bill from: the usage events say it all)."""
    events = anthropic_stream_events()
    events[-1]["amazon-bedrock-invocationMetrics"] = {
        "inputTokenCount": 50, "outputTokenCount": 503, "invocationLatency": 2113, "firstByteLatency": 391,
        "cacheReadInputTokenCount": 10000, "cacheWriteInputTokenCount": 2000,
    }  # fmt: skip
    return events


def stream_bytes(events: list[JSON] | None = None) -> bytes:
    return b"".join(chunk(e) for e in (bedrock_events() if events is None else events))


# -- the frame decoder --------------------------------------------------------------------------


def test_a_hand_built_frame_is_read_with_every_header_type() -> None:
    headers: dict[str, Header] = {
        "yes": (0, True), "no": (1, False), "byte": (2, -7), "short": (3, 1234), "int": (4, -70000),
        "long": (5, 2**40), "blob": (6, b"\x00\xff"), ":event-type": (7, "chunk"), "when": (8, 1733550000000),
        "id": (9, bytes(range(16))),
    }  # fmt: skip
    raw = frame(headers, b'{"x": 1}')

    found = read_frame(raw + b"next")

    assert found is not None
    read, length = found
    assert length == len(raw)
    assert dict(read.headers) == {name: value for name, (_, value) in headers.items()}
    assert read.payload == b'{"x": 1}'


def test_an_incomplete_frame_waits_for_more_bytes() -> None:
    raw = chunk({"type": "ping"})
    for cut in range(len(raw)):
        assert read_frame(raw[:cut]) is None, cut
    assert read_frame(raw) is not None


def test_damaged_frames_are_refused_not_misread() -> None:
    raw = bytearray(chunk({"type": "ping"}))
    damaged_prelude = bytearray(raw)
    damaged_prelude[2] ^= 0x01  # the total length
    damaged_payload = bytearray(raw)
    damaged_payload[-10] ^= 0x01
    with pytest.raises(FrameError, match="prelude"):
        read_frame(bytes(damaged_prelude))
    with pytest.raises(FrameError, match="checksum"):
        read_frame(bytes(damaged_payload))
    too_short = struct.pack(">II", 10, 0)
    with pytest.raises(FrameError, match="cannot be"):
        read_frame(too_short + struct.pack(">I", zlib.crc32(too_short)))


def test_botocore_reads_the_hand_built_frames_as_this_decoder_does() -> None:
    """The test's frames are AWS's framing: botocore's decoder (the SDK's) agrees with ours."""
    raw = stream_bytes() + exception("throttlingException", "Too many requests")
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    theirs = [(dict(message.headers), message.payload) for message in buffer]
    ours = []
    at = 0
    while (found := read_frame(raw[at:])) is not None:
        read, length = found
        ours.append((dict(read.headers), read.payload))
        at += length
    assert at == len(raw) and ours == theirs and len(ours) == len(bedrock_events()) + 1


def test_bedrock_frames_carry_anthropic_events_and_errors() -> None:
    event = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}
    decoded = [
        bedrock_event(read_frame(raw)[0])
        for raw in (chunk(event), exception("modelStreamErrorException", "boom"))
    ]  # type: ignore[index]
    other = frame({":message-type": (7, "event"), ":event-type": (7, "metadata")}, b"{}")

    assert decoded == [
        event,
        {"type": "error", "error": {"type": "modelStreamErrorException", "message": "boom"}},
    ]
    assert bedrock_event(read_frame(other)[0]) == {}  # type: ignore[index]


def sdk_reads(raw: bytes) -> list[JSON] | None:
    """What the SDK's decoder (botocore's, as ``AnthropicBedrock`` runs it) reads out of one frame passed
    on alone: the events' data, or ``None`` when it raises."""
    try:
        return [json.loads(sse.data) for sse in AWSEventStreamDecoder().iter_bytes(iter([raw]))]
    except Exception:
        return None


def guard_reads(raw: bytes) -> JSON | None:
    """What the guard reads out of the same frame: its event (``{}`` for none), ``None`` when refused."""
    try:
        found = read_frame(raw)
    except FrameError:
        return None
    assert found is not None and found[1] == len(raw)
    return bedrock_event(found[0])


def agree(raw: bytes) -> None:
    """Every event the SDK reads out of a frame, the guard reads the same; a frame the guard refuses,
    the SDK refuses too (it reads nothing after it)."""
    theirs, ours = sdk_reads(raw), guard_reads(raw)
    if ours is None:
        assert theirs is None, raw
    for event in theirs or ():
        assert ours == event or event.get("type") == "error" == ours["type"], (raw, event, ours)


MESSAGE_TYPES = [None, (7, "event"), (7, "exception"), (7, "error"), (6, b"event"), (7, "Event"), (4, 1)]
EVENT_TYPES = [None, (7, "chunk"), (7, "metadata"), (6, b"chunk"), (7, "throttlingException")]


@st.composite
def bedrock_frames(draw: st.DrawFn) -> bytes:
    """A frame a hostile or broken upstream may send: any ``:message-type`` or ``:event-type`` (or none),
    base64 with stray characters, payloads that are no JSON; or its framing bytes changed (headers and
    payload, lengths), checksums recomputed so only the framing rules decide."""
    headers: dict[str, Header] = {":content-type": (7, "application/json")}
    for name, kinds in ((":message-type", MESSAGE_TYPES), (":event-type", EVENT_TYPES)):
        kind = draw(st.sampled_from(kinds))
        if kind is not None:
            headers[name] = kind
    event = draw(st.sampled_from(bedrock_events()))
    encoded = base64.b64encode(json.dumps(event).encode()).decode()
    stray = draw(
        st.lists(st.tuples(st.integers(0, len(encoded)), st.sampled_from("\n\r \t*=-_.")), max_size=3)
    )
    for at, char in sorted(stray, reverse=True):
        encoded = encoded[:at] + char + encoded[at:]
    payload = draw(st.sampled_from([
        json.dumps({"bytes": encoded, "p": "abc"}).encode(), json.dumps({"p": "abc"}).encode(),
        b"\xef\xbb\xbf" + json.dumps({"bytes": encoded}).encode(), json.dumps([encoded]).encode(),
        json.dumps({"bytes": 5}).encode(), b"", b"{not json", json.dumps({"message": "boom"}).encode(),
    ]))  # fmt: skip
    raw = frame(headers, payload)
    if not draw(st.booleans()):
        return raw
    body = bytearray(raw[12:-4])
    for at, byte in draw(st.lists(st.tuples(st.integers(0, len(body) - 1), st.integers(0, 255)), max_size=3)):
        body[at] = byte
    cut = draw(st.integers(0, len(body)))
    headers_length = struct.unpack(">I", raw[4:8])[0] + draw(st.integers(-8, 8))
    return framed(bytes(body[:cut]), max(headers_length, 0))


@settings(max_examples=400, deadline=None)
@given(bedrock_frames())
def test_the_guard_reads_every_frame_the_sdk_reads_as_the_sdk_does(raw: bytes) -> None:
    agree(raw)


def test_frames_the_sdk_reads_past_the_old_rules_are_read() -> None:
    """botocore reads any ``:message-type`` but error and exception as an event, base64 leniently, a
    string header cut by the end of the headers as cut, a frame too short for its headers' length
    with its headers cut; it refuses a header given twice."""
    event = bedrock_events()[-2]
    encoded = base64.b64encode(json.dumps(event).encode()).decode()
    lenient = json.dumps({"bytes": encoded[:8] + "\n" + encoded[8:]}).encode()
    no_type = frame({":event-type": (7, "chunk")}, json.dumps({"bytes": encoded}).encode())
    kinds = header_bytes(":message-type", 7, "event") + header_bytes(":event-type", 7, "chunk")
    cut = kinds + header_bytes("x", 7, "abcdef")[:-3]
    twice = header_bytes("x", 7, "a") + header_bytes("x", 7, "b")

    for raw in (no_type, frame({":event-type": (7, "chunk"), ":message-type": (7, "event")}, lenient)):
        assert guard_reads(raw) == event == sdk_reads(raw)[0]  # type: ignore[index]
    assert guard_reads(framed(cut, len(cut))) == {} and sdk_reads(framed(cut, len(cut))) == []
    assert guard_reads(framed(b"", 0, total=12)[:12]) == {} and sdk_reads(framed(b"", 0, total=12)[:12]) == []
    past = kinds + b"\x01x\x06\x00\x10"  # a byte array of 16 bytes that runs past the frame's end
    assert guard_reads(framed(past, len(past) + 16)) == {} and sdk_reads(framed(past, len(past) + 16)) == []
    assert guard_reads(framed(twice, len(twice))) is None and sdk_reads(framed(twice, len(twice))) is None


def test_frames_up_to_the_sdks_limits_are_read_and_longer_refused() -> None:
    """botocore's limits: 128 KiB of headers, 24 MiB of payload (the prelude says so before they come)."""

    def prelude(total: int, headers_length: int) -> bytes:
        head = struct.pack(">II", total, headers_length)
        return head + struct.pack(">I", zlib.crc32(head))

    assert read_frame(prelude(16 + MAX_HEADERS + MAX_PAYLOAD, MAX_HEADERS)) is None  # waits for its bytes
    with pytest.raises(FrameError, match="too long"):
        read_frame(prelude(16 + MAX_HEADERS + MAX_PAYLOAD + 1, MAX_HEADERS))
    with pytest.raises(FrameError, match="too long"):
        read_frame(prelude(16 + MAX_HEADERS + 1, MAX_HEADERS + 1))
    assert (MAX_HEADERS, MAX_PAYLOAD) == (128 * 1024, 24 * 1024 * 1024)


# -- the real AnthropicBedrock client -----------------------------------------------------------


class Bedrock:
    """A MockTransport handler speaking Bedrock runtime: serves ``replies`` in order (the last repeats):
    a dict as JSON, bytes as an event stream (sent in ``piece``-byte pieces, 7 by default: frames cross
    chunk boundaries), an int as that error status with Bedrock's error body."""

    def __init__(self, *replies: JSON | bytes | int, piece: int = 7) -> None:
        self.replies = list(replies)
        self.piece = piece
        self.paths: list[str] = []
        self.bodies: list[JSON] = []
        self.headers: list[Any] = []

    def __call__(self, request: Any) -> Any:
        http = http_for(request)
        self.paths.append(request.url.raw_path.decode())
        self.bodies.append(json.loads(request.content))
        self.headers.append(request.headers)
        reply = self.replies[min(len(self.paths), len(self.replies)) - 1]
        if isinstance(reply, int):
            error = {"message": "Too many requests, please wait before trying again."}
            return http.Response(reply, json=error, headers={"x-amzn-ErrorType": "ThrottlingException"})
        if isinstance(reply, bytes):
            kind = {"content-type": "application/vnd.amazon.eventstream"}
            return http.Response(200, headers=kind, stream=pieces(http, reply, self.piece))
        return http.Response(200, json=reply)


def pieces(http: Any, raw: bytes, size: int = 7) -> Any:
    """``raw`` as a response stream of ``size``-byte pieces, for sync and async clients alike."""
    parts = [raw[i : i + size] for i in range(0, len(raw), size)]

    class Pieces(http.SyncByteStream, http.AsyncByteStream):  # type: ignore[misc,name-defined]
        def __iter__(self) -> Iterator[bytes]:
            yield from parts

        async def __aiter__(self) -> Any:
            for part in parts:
                yield part

    return Pieces()


def bedrock_message() -> JSON:
    """Bedrock's answer to ``invoke``: the Anthropic message, named with Anthropic's model name."""
    body = anthropic_message()
    body["id"] = "msg_bdrk_01XFDUDYJgAACzvnptvVoYEL"
    return body


def client(api: Bedrock, *, max_retries: int = 0) -> anthropic.AnthropicBedrock:
    return anthropic.AnthropicBedrock(
        aws_access_key="AKIDEXAMPLE", aws_secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        aws_region="us-east-1", max_retries=max_retries,
        http_client=ANTHROPIC_HTTP.Client(transport=ANTHROPIC_HTTP.MockTransport(api)),
    )  # fmt: skip


def async_client(api: Bedrock) -> anthropic.AsyncAnthropicBedrock:
    return anthropic.AsyncAnthropicBedrock(
        aws_access_key="AKIDEXAMPLE", aws_secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        aws_region="us-east-1", max_retries=0,
        http_client=ANTHROPIC_HTTP.AsyncClient(transport=ANTHROPIC_HTTP.MockTransport(api)),
    )  # fmt: skip


def request(model: str = MODEL, **extra: Any) -> JSON:
    return {"model": model, "messages": MESSAGES, "max_tokens": 1024, **extra}


def aws_nano(model: str = MODEL) -> int:
    return bg.get_price(model, provider="aws").cost_nano(CLAUDE_USAGE)


@pytest.fixture
def guard() -> Iterator[bg.Guard]:
    made = bg.Guard("memory://", budgets=[bg.Budget("user", usd="1", per="day")])
    yield made
    made.close()


def committed(guard: bg.Guard) -> list[int]:
    return [e.amounts["usd"] for e in guard.ledger.history(events=["committed"])]


def user_status(guard: bg.Guard) -> tuple[int, int]:
    [status] = guard.ledger.status(guard.counters_for([bg.Scope("user", "alice")]))
    return status.spent, status.held


def test_invoke_is_signed_sent_and_charged_at_bedrock_prices(guard: bg.Guard) -> None:
    api = Bedrock(bedrock_message())
    wrapped = guard.wrap(client(api), user="alice")

    message = wrapped.messages.create(**request())

    assert isinstance(wrapped, anthropic.AnthropicBedrock)
    assert message.usage.output_tokens == 503
    assert api.paths == [f"/model/{MODEL}/invoke"]
    assert api.headers[0]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "model" not in api.bodies[0] and "anthropic_version" in api.bodies[0]  # as Bedrock takes it
    assert committed(guard) == [aws_nano()] and user_status(guard) == (aws_nano(), 0)
    (entry,) = guard.ledger.history()
    assert entry.data["model"] == MODEL
    assert "served_model" not in entry.data  # "claude-sonnet-4-5-20250929" is the id's own name
    # Bedrock's regional endpoints cost more than Anthropic's API: the aws price, not anthropic's
    assert aws_nano() > bg.get_price("claude-sonnet-4-5-20250929", provider="anthropic").cost_nano(
        CLAUDE_USAGE
    )


def test_the_event_stream_is_read_passed_on_and_charged(guard: bg.Guard) -> None:
    api = Bedrock(stream_bytes())
    wrapped = guard.wrap(client(api), user="alice")

    events = list(wrapped.messages.create(**request(), stream=True))
    unguarded = list(client(Bedrock(stream_bytes())).messages.create(**request(), stream=True))

    assert api.paths == [f"/model/{MODEL}/invoke-with-response-stream"]
    assert [e.to_dict() for e in events] == [e.to_dict() for e in unguarded]  # passed on as it came
    assert [e.type for e in events][-2:] == ["message_delta", "message_stop"]
    assert committed(guard) == [aws_nano()] and user_status(guard) == (aws_nano(), 0)


def test_the_stream_helper_and_a_global_profile_priced_as_global(guard: bg.Guard) -> None:
    api = Bedrock(stream_bytes())
    wrapped = guard.wrap(client(api), user="alice")

    with wrapped.messages.stream(**request(GLOBAL)) as stream:
        final = stream.get_final_message()

    assert final.usage.output_tokens == 503
    assert committed(guard) == [aws_nano(GLOBAL)]
    assert aws_nano(GLOBAL) < aws_nano(MODEL)  # genai-prices: global profiles cost less than regional


def test_an_inference_profile_arn_is_priced_as_its_model(guard: bg.Guard) -> None:
    arn = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{MODEL}"
    api = Bedrock(bedrock_message())
    guard.wrap(client(api), user="alice").messages.create(**request(arn))

    assert api.paths == [f"/model/{arn.replace('/', '%2F')}/invoke"]
    assert committed(guard) == [aws_nano()]


def test_an_unpriced_model_id_is_an_error_and_nothing_is_sent(guard: bg.Guard) -> None:
    api = Bedrock(bedrock_message())
    wrapped = guard.wrap(client(api), user="alice")
    profile = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4"

    with pytest.raises(PricingError, match="application-inference-profile/a1b2c3d4"):
        wrapped.messages.create(**request(profile))
    assert api.paths == [] and guard.ledger.history() == []


def test_a_stream_cut_by_an_exception_frame_is_charged_what_it_showed(guard: bg.Guard) -> None:
    events = bedrock_events()[:4]  # message_start, a block, a ping, a delta: then Bedrock fails
    api = Bedrock(stream_bytes(events) + exception("modelStreamErrorException", "the model stopped"))
    wrapped = guard.wrap(client(api), user="alice")

    with pytest.raises(anthropic.APIStatusError, match="the model stopped"):
        for _ in wrapped.messages.create(**request(), stream=True):
            pass

    (entry,) = guard.ledger.history()
    assert entry.event == "committed" and entry.data["usage_missing"] is True
    assert entry.data["usage"]["cache_read_tokens"] == 10000  # message_start's input, read from its frame
    assert user_status(guard) == (entry.amounts["usd"], 0)


def test_a_damaged_frame_stops_the_stream_and_it_is_settled_from_what_it_showed(guard: bg.Guard) -> None:
    raw = bytearray(stream_bytes())
    first = len(chunk(bedrock_events()[0]))
    raw[first + 20] ^= 0xFF  # the second frame's bytes damaged: its checksum fails
    api = Bedrock(bytes(raw))
    wrapped = guard.wrap(client(api), user="alice")
    seen: list[str] = []
    stream = iter(wrapped.messages.create(**request(), stream=True))
    seen.append(next(stream).type)

    with pytest.raises(anthropic.APIConnectionError) as raised:  # (the SDK wraps a body's error so)
        seen.append(next(stream).type)

    assert isinstance(raised.value.__cause__, FrameError)
    assert f"at byte {first}: the frame's checksum does not match" in str(raised.value.__cause__)
    assert seen == ["message_start"]  # nothing from the damaged frame on reached the client
    (entry,) = guard.ledger.history()
    assert entry.data["usage_missing"] is True and entry.data["interrupted"] is True
    assert user_status(guard) == (entry.amounts["usd"], 0)


def hostile(event: JSON, headers: dict[str, Header], encoded: str) -> bytes:
    return frame({":event-type": (7, "chunk"), **headers}, json.dumps({"bytes": encoded, "p": "ab"}).encode())


def b64(event: JSON) -> str:
    return base64.b64encode(json.dumps(event).encode()).decode()


@pytest.mark.parametrize(
    "after_the_first",
    [
        pytest.param(lambda e: hostile(e, {}, b64(e)), id="no :message-type"),
        pytest.param(lambda e: hostile(e, {":message-type": (6, b"event")}, b64(e)), id="a byte-array type"),
        pytest.param(lambda e: hostile(e, {":message-type": (7, "event")}, b64(e)[:8] + "\n" + b64(e)[8:]),
                     id="base64 with a newline"),
    ],
)  # fmt: skip
def test_frames_the_sdk_reads_are_charged_as_it_reads_them(guard: bg.Guard, after_the_first: Any) -> None:
    """Bedrock's usage after ``message_start``, in frames the SDK reads though they are not as Bedrock
    sends them: the guard reads them too, and charges the bill."""
    events = bedrock_events()
    api = Bedrock(chunk(events[0]) + b"".join(after_the_first(e) for e in events[1:]))
    wrapped = guard.wrap(client(api), user="alice")

    usage = [e.usage.output_tokens for e in wrapped.messages.create(**request(), stream=True)
             if e.type == "message_delta"]  # fmt: skip

    assert usage[-1] == CLAUDE_USAGE.output_tokens
    (entry,) = guard.ledger.history()
    assert entry.amounts["usd"] == aws_nano() and "usage_missing" not in entry.data


def test_a_frame_past_16_mib_within_the_sdks_limit_is_read_through(guard: bg.Guard) -> None:
    """A 17 MiB frame between the events (the SDK reads up to 24 MiB): the guard reads it and those
    after it, and charges the bill."""
    events = bedrock_events()
    pad = frame({":event-type": (7, "metadata"), ":message-type": (7, "event")},
                json.dumps({"p": "z" * (17 << 20)}).encode())  # fmt: skip
    raw = chunk(events[0]) + pad + b"".join(chunk(e) for e in events[1:])
    wrapped = guard.wrap(client(Bedrock(raw, piece=1 << 16)), user="alice")
    unguarded = client(Bedrock(raw, piece=1 << 16))

    kinds = [e.type for e in wrapped.messages.create(**request(), stream=True)]

    assert kinds == [e.type for e in unguarded.messages.create(**request(), stream=True)]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert committed(guard) == [aws_nano()] and user_status(guard) == (aws_nano(), 0)


def test_retries_are_each_reserved_and_journaled_with_their_attempt(guard: bg.Guard) -> None:
    api = Bedrock(429, 500, bedrock_message())
    guard.wrap(client(api, max_retries=2), user="alice").messages.create(**request())

    assert [(e.event, e.data["attempt"]) for e in guard.ledger.history()] == [
        ("released", 1), ("released", 2), ("committed", 3),
    ]  # fmt: skip
    assert user_status(guard) == (aws_nano(), 0)


def test_a_refusal_is_raised_and_not_sent(guard: bg.Guard) -> None:
    api = Bedrock(bedrock_message())
    wrapped = guard.wrap(client(api, max_retries=2), user="alice")
    [spec] = guard.counters_for([bg.Scope("user", "alice")])
    guard.ledger.set_limit(spec, 1000)

    with pytest.raises(BudgetExceededError):
        wrapped.messages.create(**request())
    assert api.paths == []


def test_a_body_that_is_not_anthropic_is_refused_clearly(guard: bg.Guard) -> None:
    """Bedrock's invoke takes each model's own body: the guard reads Anthropic's only."""
    api = Bedrock(bedrock_message())
    transport = BudgetTransport(guard, ANTHROPIC_HTTP.MockTransport(api), user="alice")
    http = ANTHROPIC_HTTP.Client(
        transport=transport, base_url="https://bedrock-runtime.us-east-1.amazonaws.com"
    )
    nova = {"schemaVersion": "messages-v1", "messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    with (
        http,
        pytest.raises(ConfigurationError, match=r"cannot price POST /model/amazon\.nova-pro-v1:0/invoke"),
    ):
        http.post("/model/amazon.nova-pro-v1:0/invoke", json=nova)
    assert api.paths == []


async def test_async_client_stream() -> None:
    guard = bg.Guard("memory://", budgets=[bg.Budget("user", usd="1", per="day")])
    api = Bedrock(stream_bytes())
    wrapped = guard.wrap(async_client(api), user="alice")

    stream = await wrapped.messages.create(**request(), stream=True)
    kinds = [event.type async for event in stream]

    assert isinstance(wrapped, anthropic.AsyncAnthropicBedrock)
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert committed(guard) == [aws_nano()]
    await guard.aclose()


def mock_nano(model: str, reported: JSON) -> int:
    """The aws price of a usage the mock reported (no cache in these prompts: input and output only)."""
    assert not reported.get("cache_read_input_tokens") and not reported.get("cache_creation_input_tokens")
    usage = bg.Usage(input_tokens=reported["input_tokens"], output_tokens=reported["output_tokens"])
    return bg.get_price(model, provider="aws").cost_nano(usage)


def test_over_http_against_the_mock_bedrock_server(guard: bg.Guard) -> None:
    """The local HTTP server speaks Bedrock too (``MockProvider.bedrock()``): a real socket, chunked
    event-stream framing, SigV4-signed requests."""
    with MockProvider() as api:
        wrapped = guard.wrap(api.bedrock(), user="alice")
        message = wrapped.messages.create(**request())
        text = "".join(
            e.delta.text for e in wrapped.messages.create(**request(GLOBAL), stream=True)
            if e.type == "content_block_delta"
        )  # fmt: skip

    assert message.model == "claude-sonnet-4-5-20250929" and message.content[0].text.startswith(text[:10])
    assert [r.path for r in api.requests] == [
        f"/model/{MODEL}/invoke",
        f"/model/{GLOBAL}/invoke-with-response-stream",
    ]
    assert api.requests[0].headers["Authorization"].startswith("AWS4-HMAC-SHA256")
    expected = [mock_nano(MODEL, api.usages[0]), mock_nano(GLOBAL, api.usages[1])]
    assert committed(guard) == expected and user_status(guard) == (sum(expected), 0)
