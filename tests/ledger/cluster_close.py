"""Close redis-py ``RedisCluster`` clients for real.

redis-py 8.1's ``RedisCluster.close()`` calls ``Redis.close()`` on each node's client, which does not
disconnect a connection pool it was given; those sockets stay open until the garbage collector finds
them, and under ``filterwarnings = error`` the ``ResourceWarning`` then fails whichever test (or the
end of the session) happens to run the collection. ``RedisLedger.close()`` inherits the leak.
"""

from __future__ import annotations

from typing import Any

import redis

__all__ = ["close_cluster_client", "close_ledger"]


def close_cluster_client(client: Any) -> None:
    nodes = client.get_nodes()
    client.close()
    for node in nodes:
        if node.redis_connection is not None:
            node.redis_connection.connection_pool.disconnect()


def close_ledger(ledger: Any) -> None:
    """``ledger.close()``, plus the node pools of a cluster client (safe to call more than once)."""
    client = getattr(ledger, "client", None)
    if isinstance(client, redis.RedisCluster):
        close_cluster_client(client)
    ledger.close()
