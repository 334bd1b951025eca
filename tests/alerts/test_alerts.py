"""Alert sinks against real receivers: a local HTTP server (webhook, Slack) and a local SMTP server."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import budgetguard as bg
from budgetguard.alerts import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Alert,
    DeliveryError,
    Email,
    Sink,
    Slack,
    Webhook,
    load_alerts,
    verify,
)
from budgetguard.alerts import _delivery as delivery
from tests.alerts.conftest import Mailbox, Receiver, free_port

USAGE = {"prompt_tokens": 5, "completion_tokens": 500}  # gpt-4o: ~$0.005 a call, within its worst case
COST = bg.cost("gpt-4o", bg.Usage(input_tokens=5, output_tokens=500))
SECRET = "s3cret"


def guarded(url: str, sinks: list[Sink], **options: Any) -> tuple[bg.Guard, Any]:
    guard = bg.Guard(
        url,
        budgets=[bg.Budget("user", usd="0.05", per="day")],
        thresholds=("0.5", "0.8"),
        on_event=sinks,
        **options,
    )

    @guard.with_budget(user="{user}")
    def call(*, user: str, model: str, messages: Any, max_tokens: int) -> dict[str, Any]:
        return {"usage": USAGE}

    def ask(user: str = "ann") -> Any:
        return call(user=user, model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=500)

    return guard, ask


def test_a_threshold_reaches_the_webhook_once_per_window_across_the_fleet(
    store_url: str, receiver: Receiver
) -> None:
    """Two guards on one store (two processes of a fleet), each with its own webhook sink: every
    threshold is crossed by exactly one commit, so each is delivered once, signed. Once the budget
    cannot take another call, each process says its calls are being refused (once: the repeats are
    held back)."""
    sinks = [Webhook(receiver.url, secret=SECRET, backoff=0), Webhook(receiver.url, secret=SECRET, backoff=0)]
    guards = [guarded(store_url, [sink]) for sink in sinks]
    for i in range(9):  # ~$0.005 each: 50% at the 5th, 80% at the 8th; a 10th does not fit
        guards[i % 2][1]()
    for _, ask in guards * 2:
        with pytest.raises(bg.BudgetExceededError):
            ask()
    for sink in sinks:
        assert sink.flush(timeout=60)
    alerts = [r.json() for r in receiver.received]
    crossed = [a for a in alerts if a["kind"] == "threshold"]
    assert sorted(a["data"]["threshold"] for a in crossed) == ["50%", "80%"]
    assert {a["title"] for a in crossed} == {
        "user:ann reached 50% of its day budget",
        "user:ann reached 80% of its day budget",
    }
    refusing = [a["title"] for a in alerts if a["kind"] == "refused"]
    assert refusing == ["user:ann is refusing calls: its budget is used up or too low"] * 2
    [half] = [a for a in crossed if a["data"]["threshold"] == "50%"]
    assert (half["kind"], half["scopes"][-1:], half["data"]["spent"]) == (
        "threshold",
        ["user:ann"],
        5 * bg.to_nano(COST),
    )
    assert f"spent ${5 * COST:f} of $0.05 (usd, day)" in half["text"]
    for got in receiver.received:  # signed: the documented check, and the HMAC recomputed by hand
        assert verify(SECRET, got.body, got.headers)
        stamp = got.headers[TIMESTAMP_HEADER]
        mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + got.body, hashlib.sha256).hexdigest()
        assert got.headers[SIGNATURE_HEADER] == f"v1={mac}"
        assert not verify("other", got.body, got.headers) and not verify(SECRET, got.body + b" ", got.headers)
    assert sum(s.delivered for s in sinks) == 4 and sum(s.failed + s.dropped for s in sinks) == 0
    for guard, _ in guards:
        guard.close()
    for sink in sinks:  # each held back its second refusal: closing tells it
        assert sink.close(timeout=60)
    told = [r.json() for r in receiver.received[len(alerts) :]]
    assert [(a["kind"], a["held_back"]) for a in told] == [("refused", 0)] * 2


def test_an_alert_is_retried_until_the_receiver_takes_it(receiver: Receiver) -> None:
    receiver.statuses = [500, 429, 503]
    receiver.retry_after = "0"
    sink = Webhook(receiver.url, kinds=["threshold"], backoff=0.01)
    guard, ask = guarded("memory://", [sink])
    for _ in range(5):
        ask()
    assert sink.flush(timeout=60)
    assert [r.json()["data"]["threshold"] for r in receiver.received] == ["50%"]
    assert (sink.delivered, sink.failed) == (1, 0)
    guard.close()


def test_a_receiver_that_is_down_is_retried_then_reported_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[tuple[bg.Event, Exception]] = []
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    sink = Webhook(down, attempts=3, backoff=0.01, on_failure=lambda e, exc: failures.append((e, exc)))
    guard, ask = guarded("memory://", [sink])
    with caplog.at_level(logging.ERROR, logger="budgetguard.alerts"):
        for _ in range(5):
            ask()  # crosses 50%: its alert cannot be delivered
        assert sink.flush(timeout=60)
    status = guard.ledger.status(guard.counters_for([bg.Scope("user", "ann")]))[0]
    assert status.spent == 5 * bg.to_nano(COST)  # the calls were charged as ever
    [(event, error)] = failures
    assert (
        event.kind == "threshold"
        and isinstance(error, DeliveryError)
        and "could not be reached" in str(error)
    )
    assert (sink.delivered, sink.failed) == (0, 1)
    assert "gave up after 3 attempts" in caplog.text
    guard.close()


def test_a_slow_receiver_never_holds_a_guarded_call_and_the_queue_is_bounded(receiver: Receiver) -> None:
    """The receiver holds every request: the guarded calls still return (their alerts queue, at most
    ``max_queue`` of them; the rest are dropped and counted), and are delivered once it answers."""
    receiver.gate.clear()
    sink = Webhook(receiver.url, kinds=["committed"], max_queue=2, quiet=0)
    guard, ask = guarded("memory://", [sink])
    done = threading.Event()

    def calls() -> None:
        ask()
        assert receiver.arrived.acquire(timeout=60)  # the first alert is with the receiver, held
        for _ in range(5):
            ask()
        done.set()

    worker = threading.Thread(target=calls)
    worker.start()
    assert done.wait(timeout=120), "a guarded call waited for the alert receiver"
    assert receiver.received == []  # none delivered yet: the calls did not wait for them
    receiver.gate.set()
    worker.join()
    assert sink.flush(timeout=60)
    assert (sink.delivered, sink.dropped, len(receiver.received)) == (3, 3, 3)
    guard.close()


def test_repeats_are_held_back_for_quiet_seconds_and_counted_thresholds_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, int]] = []
    ids: list[str] = []

    class Recording(Sink):
        def send(self, alert: Alert) -> None:
            sent.append((alert.event.kind, alert.held))
            ids.append(alert.id)

    clock = [1000.0]
    monkeypatch.setattr(delivery.time, "monotonic", lambda: clock[0])  # the sink's clock, not the host's
    sink = Recording(quiet=60)
    down = bg.Event("store_unavailable", scopes=("user:ann",), reason="connection refused")
    crossing = bg.Event("threshold", scopes=("user:ann",), data={"threshold": "50%"})
    for event in (down, down, down, crossing, crossing):
        sink(event)
    clock[0] += 61  # the quiet time has passed: the next one goes, saying how many were held back
    sink(down)
    assert sink.close(timeout=60)
    # (had the worker woken between the two lines above, it told the two held back itself: the last of
    # them, "and 1 more", then the next one went alone)
    assert sent[:3] == [("store_unavailable", 0), ("threshold", 0), ("threshold", 0)]
    assert sent[3:] in ([("store_unavailable", 2)], [("store_unavailable", 1), ("store_unavailable", 0)])
    assert len(set(ids)) == len(sent)
    sink(down)  # after close: ignored
    assert len(sent) in (4, 5)


def test_repeats_held_back_are_told_when_no_later_alert_comes(receiver: Receiver) -> None:
    """An outage's repeats that ``quiet`` held back are not left untold when the outage ends: at the end
    of the quiet time the last of them goes out with the count; ``close()`` tells what is still held."""
    sink = Webhook(receiver.url, secret=SECRET, quiet=0.5)
    down = [bg.Event("store_unavailable", scopes=("user:ann",), reason=f"refused #{n}") for n in range(4)]
    for event in down:
        sink(event)
    deadline = time.monotonic() + 60  # (a bound for a stuck test, not a measure of speed)
    while len(receiver.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    first, told = (r.json() for r in receiver.received)
    assert (first["held_back"], told["held_back"]) == (0, 2)  # the first, then the last: "and 2 more"
    assert "refused #3" in told["text"] and "2 more like it" in told["text"]
    closing = Webhook(receiver.url, secret=SECRET, quiet=3600)
    for event in down[:3]:
        closing(event)
    assert closing.close(timeout=60)
    assert [r.json()["held_back"] for r in receiver.received[2:]] == [0, 1]


def test_an_alert_keeps_its_id_across_retries_and_a_failing_sink_keeps_working(receiver: Receiver) -> None:
    receiver.statuses = [503]
    sink = Webhook(receiver.url, secret=SECRET, backoff=0, quiet=0)
    sink(bg.Event("spend_lost", scopes=("user:ann",), actual=Decimal("0.5"), reason="store down"))
    assert sink.flush(timeout=60)
    [got] = receiver.received
    first = got.json()["id"]
    assert len(first) == 16 and sink.delivered == 1  # the 503 then the retry: one alert, one id
    with pytest.raises(bg.ConfigurationError, match="whole numbers"):
        Webhook(receiver.url, attempts=2.0)  # type: ignore[arg-type]
    sink(bg.Event("spend_lost", scopes=("user:bo",), actual=Decimal("0.5"), reason="store down"))
    assert sink.close(timeout=60)
    assert [r.json()["id"] != first for r in receiver.received[1:]] == [True]


def test_verify_says_false_to_crafted_headers() -> None:
    body = b"{}"
    for stamp, signature in (("\u00b2", "v1=00"), ("1", "v1=\u00e9"), (str(int(time.time())), "v1=\u00e9")):
        assert not verify(SECRET, body, {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature})


def test_a_receiver_url_is_not_written_into_errors() -> None:
    failures: list[Exception] = []
    url = f"http://127.0.0.1:{free_port()}/services/T000/B000/SECRETTOKEN"
    sink = Slack(url, attempts=1, on_failure=lambda e, exc: failures.append(exc))
    sink(bg.Event("spend_lost", scopes=("user:ann",), actual=Decimal("0.5")))
    assert sink.close(timeout=60)
    assert failures and "SECRETTOKEN" not in str(failures[0]) and "127.0.0.1" in str(failures[0])


def test_slack_gets_plain_text_with_data_escaped(receiver: Receiver) -> None:
    sink = Slack(receiver.url)
    sink(bg.Event("overrun", scopes=("team:<!channel>&x", "global"), model="gpt-4o", actual=Decimal("0.02"),
                  estimated=Decimal("0.01"), reason="*bold* _x_"))  # fmt: skip
    assert sink.close(timeout=60)
    [got] = receiver.received
    body = got.json()
    assert body["mrkdwn"] is False
    assert body["text"].startswith(
        "budgetguard: a call cost more than it reserved on team:&lt;!channel&gt;&amp;x"
    )
    assert "reason: *bold* _x_" in body["text"] and "cost: $0.02 (reserved $0.01)" in body["text"]


def test_email_alerts_over_smtp(mailbox: Mailbox) -> None:
    sink = Email(
        "127.0.0.1",
        port=mailbox.port,
        sender="budgets@example.com",
        to=["ops@example.com", "cfo@example.com"],
    )
    guard, ask = guarded("memory://", [sink])
    for _ in range(9):
        ask()
    assert sink.flush(timeout=60)
    subjects = [m["Subject"] for m in mailbox.messages]
    assert subjects == [
        "[budgetguard] user:ann reached 50% of its day budget",
        "[budgetguard] user:ann reached 80% of its day budget",
    ]
    first = mailbox.messages[0]
    assert (
        first["X-Envelope-To"] == "ops@example.com, cfo@example.com"
        and first["From"] == "budgets@example.com"
    )
    assert f"spent ${5 * COST:f} of $0.05 (usd, day)" in first.get_payload()
    guard.close()


def test_email_to_a_server_that_is_down_is_reported() -> None:
    failures: list[Exception] = []
    sink = Email("127.0.0.1", port=free_port(), sender="a@example.com", to="b@example.com", attempts=2,
                 backoff=0, on_failure=lambda e, exc: failures.append(exc))  # fmt: skip
    sink(bg.Event("spend_lost", scopes=("user:ann",), actual=Decimal("0.5"), reason="store down"))
    assert sink.close(timeout=60)
    assert sink.failed == 1 and "SMTP 127.0.0.1" in str(failures[0])


def test_load_alerts_reads_the_budgets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "from-env")
    monkeypatch.setenv("SLACK_URL", "https://hooks.slack.example/services/T/B/X")
    path = tmp_path / "budgets.toml"
    path.write_text(
        '[[budgets]]\nscope = "user"\nusd = "1"\nper = "day"\n\n'
        '[[alerts]]\ntype = "webhook"\nurl = "https://ops.example/hook"\nsecret_env = "HOOK_SECRET"\n'
        'kinds = ["threshold", "spend_lost"]\nquiet = 30\n\n'
        '[[alerts]]\ntype = "slack"\nurl_env = "SLACK_URL"\n\n'
        '[[alerts]]\ntype = "email"\nhost = "smtp.example"\nport = 587\nsender = "a@example.com"\n'
        'to = ["b@example.com"]\nstarttls = true\n'
    )
    webhook, slack, email = load_alerts(path)
    assert isinstance(webhook, Webhook) and webhook.secret == "from-env" and webhook.quiet == 30
    assert webhook.kinds == {"threshold", "spend_lost"}
    assert isinstance(slack, Slack) and slack.url == "https://hooks.slack.example/services/T/B/X"
    assert isinstance(email, Email) and (email.port, email.to, email.starttls) == (
        587,
        ["b@example.com"],
        True,
    )
    assert bg.load_budgets(path)[0].target == "user"  # the budgets read as ever beside them
    for bad, message in (
        ('[[alerts]]\ntype = "pager"\n', "needs a type: webhook, slack, email"),
        ('[[alerts]]\ntype = "webhook"\nurl = "https://x.example"\nsecrt = "x"\n', "unknown key 'secrt'"),
        ('[[alerts]]\ntype = "slack"\nurl_env = "NOT_SET_ANYWHERE"\n', "NOT_SET_ANYWHERE"),
        (
            '[[alerts]]\ntype = "webhook"\nurl = "https://x.example"\nkinds = ["thresh"]\n',
            "kinds is a list of",
        ),
        ('[[alerts]]\ntype = "webhook"\nurl = "ftp://x.example"\n', "http:// or https:// URL"),
        ('[[alerts]]\ntype = "email"\nsender = "a@example.com"\nto = "b@example.com"\n', "needs host"),
    ):
        path.write_text(bad)
        with pytest.raises(bg.ConfigurationError, match=message):
            load_alerts(path)
