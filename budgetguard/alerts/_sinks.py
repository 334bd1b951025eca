"""The alert sinks: a signed JSON webhook, a Slack incoming webhook, and e-mail over SMTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from typing import Any

from .._errors import ConfigurationError
from ._delivery import Alert, DeliveryError, Sink
from ._text import document, lines, title

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "Email", "Slack", "Webhook", "sign", "verify"]

SIGNATURE_HEADER = "X-Budgetguard-Signature"
TIMESTAMP_HEADER = "X-Budgetguard-Timestamp"


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The signature a ``Webhook`` sends: ``v1=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "v1=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, headers: Mapping[str, str], *, tolerance: float = 300.0) -> bool:
    """For a receiver: whether ``body`` and its ``headers`` were signed with ``secret`` less than
    ``tolerance`` seconds ago (an old, replayed request fails)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    signature = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = sign(secret, timestamp, body).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def _post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> None:
    """POST ``body``; a ``DeliveryError`` unless the receiver answers 2xx (retried on 408, 429, 5xx and
    connection errors, with its ``Retry-After`` if it gives one). Errors name the receiver by scheme
    and host only: a webhook's path is often its secret (Slack's)."""
    where = _origin(url)
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
    except urllib.error.HTTPError as exc:
        exc.close()  # (its response's socket)
        retry = exc.code in (408, 425, 429) or exc.code >= 500
        after = exc.headers.get("Retry-After", "") if exc.headers else ""
        raise DeliveryError(
            f"{where} answered {exc.code}", retry=retry, after=float(after) if after.isdigit() else None
        ) from None
    except (OSError, urllib.error.URLError) as exc:  # refused, reset, timed out, DNS
        raise DeliveryError(f"{where} could not be reached: {exc}") from None


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, without its path, query or credentials."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def _url(url: str, what: str) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"{what} needs an http:// or https:// URL, got {url!r}")
    return url


class Webhook(Sink):
    """POST each alert as JSON (``budgetguard.alerts`` docs: ``kind``, ``title``, ``text``, ``scopes``,
    ``model``, amounts as decimal strings, ``data``...) to ``url``. With ``secret``, signed: the
    ``X-Budgetguard-Timestamp`` header and ``X-Budgetguard-Signature: v1=<hex HMAC-SHA256 of
    "<timestamp>.<body>">`` (check it with ``verify``)."""

    def __init__(
        self, url: str, *, secret: str | bytes | None = None, headers: Mapping[str, str] | None = None,
        timeout: float = 5.0, **options: Any,
    ) -> None:  # fmt: skip
        super().__init__(**options)
        self.url = _url(url, "Webhook")
        self.secret, self.headers, self.timeout = secret, dict(headers or {}), timeout

    def send(self, alert: Alert) -> None:
        body = json.dumps(document(alert), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "budgetguard-alerts", **self.headers}
        if self.secret is not None:
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self.secret, timestamp, body)
        _post(self.url, body, headers, self.timeout)

    def __repr__(self) -> str:
        return f"Webhook({_origin(self.url)})"


class Slack(Sink):
    """Post each alert to a Slack incoming webhook (``https://hooks.slack.com/services/...``): plain text,
    scope ids and models shown as they are (``&``, ``<``, ``>`` escaped, no mrkdwn)."""

    def __init__(self, url: str, *, timeout: float = 5.0, **options: Any) -> None:
        super().__init__(**options)
        self.url, self.timeout = _url(url, "Slack"), timeout

    def send(self, alert: Alert) -> None:
        text = "\n".join(lines(alert.event, alert.held))
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        body = json.dumps({"text": f"budgetguard: {escaped}", "mrkdwn": False}).encode()
        _post(self.url, body, {"Content-Type": "application/json"}, self.timeout)

    def __repr__(self) -> str:
        return "Slack"


class Email(Sink):
    """Send each alert as a plain-text e-mail over SMTP (``starttls`` upgrades the connection,
    ``use_ssl`` connects with TLS; ``username``/``password`` log in)."""

    def __init__(
        self, host: str, *, sender: str, to: str | Iterable[str], port: int = 25, username: str | None = None,
        password: str | None = None, starttls: bool = False, use_ssl: bool = False, timeout: float = 10.0,
        subject_prefix: str = "[budgetguard]", **options: Any,
    ) -> None:  # fmt: skip
        super().__init__(**options)
        recipients = [to] if isinstance(to, str) else list(to)
        if not host or not sender or not recipients:
            raise ConfigurationError("Email needs host, sender and at least one recipient (to=...)")
        self.host, self.port, self.sender, self.to = host, port, sender, recipients
        self.username, self.password = username, password
        self.starttls, self.use_ssl, self.timeout = starttls, use_ssl, timeout
        self.subject_prefix = subject_prefix

    def send(self, alert: Alert) -> None:
        message = EmailMessage()
        subject = f"{self.subject_prefix} {title(alert.event)}".strip()
        message["Subject"] = "".join(c if c.isprintable() else " " for c in subject)  # (ids are user data)
        message["From"], message["To"] = self.sender, ", ".join(self.to)
        message["Message-ID"] = f"<budgetguard-{alert.id}@{self.sender.rpartition('@')[2] or 'localhost'}>"
        message.set_content("\n".join(lines(alert.event, alert.held)) + "\n")
        try:
            smtp: smtplib.SMTP
            if self.use_ssl:
                smtp = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username is not None:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"SMTP {self.host}:{self.port} answered {exc.smtp_code}", retry=exc.smtp_code < 500
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"SMTP {self.host}:{self.port} failed: {exc}") from None

    def __repr__(self) -> str:
        return f"Email({self.host}:{self.port})"
