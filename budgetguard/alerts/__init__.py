"""Alerts that reach people: sinks for budgetguard's events, each an ``on_event`` hook.

``Webhook(url, secret=...)`` (signed JSON), ``Slack(url)`` (an incoming webhook) and ``Email(host, ...)``
(SMTP) deliver thresholds crossed, overruns, lost spend and store outages, in the background: a guarded
call only puts the alert on a bounded queue. A threshold is emitted once per window across the fleet
(the ledger decides which commit crossed it), so it is delivered once. ``load_alerts(path)`` reads
``[[alerts]]`` tables from a budgets file.

    sinks = [Webhook("https://ops.example/hooks/budget", secret=os.environ["HOOK_SECRET"])]
    guard = Guard(url, budgets=..., on_event=sinks)
"""

from ._config import load_alerts
from ._delivery import DEFAULT_KINDS, Alert, DeliveryError, Sink
from ._sinks import SIGNATURE_HEADER, TIMESTAMP_HEADER, Email, Slack, Webhook, sign, verify
from ._text import document

__all__ = [
    "DEFAULT_KINDS", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "Alert", "DeliveryError", "Email", "Sink",
    "Slack", "Webhook", "document", "load_alerts", "sign", "verify",
]  # fmt: skip
