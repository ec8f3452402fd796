"""What ``distpool status`` shows of a cluster, read from its result store and its broker."""

from __future__ import annotations

from typing import Any

from .brokers.celery_app import new_app, urls
from .config import Settings, mask_url
from .store.nodes import NodeRecords
from .store.redis_store import RedisStore


def cluster_status(settings: Settings, timeout: float = 5.0) -> dict[str, Any]:
    """The nodes serving the queue (with their slots, busy slots and what each slot runs),
    its depth, and the pools with work in flight; the shape is documented in ``distpool
    status --help``. No worker is asked anything: the nodes are read from the records their
    parents publish (:mod:`distpool.store.nodes`), in one round trip to the result store,
    however many slots they have. ``timeout``: for each connect and reply."""
    broker_url, result_url = urls(settings)
    records = NodeRecords(result_url, timeout)
    store = RedisStore(result_url, timeout)
    try:
        nodes = records.read(settings.queue)
        pools = store.pools()
    finally:
        records.close()
        store.close()
    with new_app(settings).connection_for_write(connect_timeout=timeout) as connection:
        try:
            _, depth, _ = connection.default_channel.queue_declare(
                queue=settings.queue, passive=True)
        except connection.channel_errors:  # an AMQP queue that was never declared
            depth = 0
    return {"broker": mask_url(broker_url), "queue": settings.queue, "queue_depth": depth,
            "nodes": nodes,
            "pools": [{"id": pool_id, **info} for pool_id, info in sorted(pools.items())]}
