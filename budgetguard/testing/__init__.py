"""A local mock of the OpenAI and Anthropic HTTP APIs, for demos and tests without a key or a network.

``MockProvider`` is a real HTTP server on 127.0.0.1 (a free port, a daemon thread) that the real
``openai`` and ``anthropic`` SDK clients talk to. It answers chat completions, the Responses API,
embeddings, Anthropic messages and ``messages/count_tokens``, as JSON or as SSE streams.

The usage it reports follows its own fixed, documented rule (``budgetguard.testing._rule``), independent
of budgetguard's estimator, so a test that compares the two is not checking the code against itself:

* input tokens are a raw tiktoken encode of the strings a request carries plus fixed figures per message
  and per request, read off real recorded OpenAI responses (4 per message, 3 per request); tools, images
  and Claude (o200k_base x 1.2, 3 per message, 4 per request) have figures of their own;
  :func:`count_input` gives the rule's total for a request;
* output is a deterministic reply capped by the request's max tokens; reasoning models (o1, o3, o4, gpt-5)
  also "think" (64, 256 or 1024 tokens by effort);
* a Responses request that offers a ``web_search`` tool makes one search before it answers (a
  ``web_search_call`` output item, billed per call; its results add no tokens to the rule's input);
* a prompt whose prefix (every message but the last, >= 1024 tokens) was seen before reports cached
  tokens in 128-token steps, as OpenAI's prompt cache does; a Claude ``cache_control`` prefix of >= 1024
  tokens is a cache write the first time (5-minute or 1-hour by its ``ttl``) and a cache read afterwards.

budgetguard's estimate of a plain request (text messages) is never below what the mock reports, so a
guarded call against the mock is never an overrun. How close the estimate is to what the providers
really count is measured against their recorded counts (``tests/realworld``), not against the mock.

Faults are scripted: ``fail()`` answers the next requests with an error status, ``delay()`` answers late,
``cut()`` drops a stream's connection after some events (an incomplete chunked body, as a real network
cut looks to the client); ``decline()`` makes a Claude model decline the requests that offer server-side
``fallbacks``, which the next entry serves (``usage.iterations`` as Anthropic reports them). Everything
received and every usage reported is recorded. ``MockProvider(project_service_tier="priority")`` serves
(and reports) OpenAI requests that name no ``service_tier`` (or ``"auto"``) at priority, as a project
whose default tier is Priority does.

```python
with MockProvider() as mock:
    client = mock.openai()
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[...], max_tokens=50)
```
"""

from __future__ import annotations

from ._rule import count_input
from ._server import MockProvider, RecordedRequest

__all__ = ["MockProvider", "RecordedRequest", "count_input"]
