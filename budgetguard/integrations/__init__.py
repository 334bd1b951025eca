"""Integrations with the frameworks people already use; each is an optional extra, imported on demand.

* ``budgetguard.integrations.langchain``: ``BudgetCallbackHandler`` and ``get_budget_callback``
  (``pip install 'llm-budgetguard[langchain]'``), and ``budgetguard.integrations.langchain_agents``:
  ``BudgetMiddleware``, for the agents of LangChain 1.x's ``create_agent`` (``[langchain-agents]``);
* ``budgetguard.integrations.fastapi``: ``BudgetMiddleware`` (any ASGI app) and ``budget_scope``
  (a FastAPI dependency) (``[fastapi]``);
* ``budgetguard.integrations.django``: ``BudgetMiddleware`` (``[django]``), and
  ``budgetguard.integrations.flask``: ``BudgetGuard`` (``[flask]``), the FastAPI middleware's behaviour;
* ``budgetguard.integrations.celery``: ``install()``, tasks run in their enqueuer's scopes (``[celery]``);
* ``budgetguard.integrations.opentelemetry``: ``OpenTelemetryHook``, GenAI metrics and span
  attributes (``[otel]``);
* ``budgetguard.integrations.prometheus``: ``PrometheusHook``, counters and gauges (``[prometheus]``);
* ``budgetguard.integrations.httpx``: ``BudgetTransport`` / ``AsyncBudgetTransport``, the transport
  under ``Guard.wrap(client)`` (no extra: it uses the HTTP library of the requests it sends).

Importing ``budgetguard`` imports none of them.
"""

from __future__ import annotations

from .._errors import ConfigurationError

__all__ = ["missing_extra"]


def missing_extra(extra: str, exc: ImportError) -> ConfigurationError:
    """The error raised when an integration's library is not installed: it names the extra."""
    return ConfigurationError(
        f"this integration needs {exc.name or 'a library'} (missing: {exc}); "
        f"install it with: pip install 'llm-budgetguard[{extra}]'"
    )
