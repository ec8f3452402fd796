"""The names of distpool's keys in the result Redis, shared by clients and workers.

* ``distpool:pool:<id>:live``: present while the pool's client is alive (it refreshes the key),
  and for a named run's resume window after its death (see :mod:`distpool.client.adoption`);
  workers skip the tasks of a pool whose key is gone: terminated, or its client died.
* ``distpool:pool:<id>:info``: what the client reports of the pool (host, pid, processes,
  tasks sent and done), for ``distpool status``; it expires with the liveness key.
* ``distpool:pool:<id>:results``: the pool's result records; workers push, the client's
  collector thread pops. Every write renews its expiry, so nothing outlives an abandoned pool.
* ``distpool:pool:<id>:received``: the records the collector has taken from the results and
  not yet acknowledged (it does with its next take), so that a reply lost on its way loses
  none; ``distpool:pool:<id>:acknowledged``, how many it has acknowledged in all, which
  makes an acknowledgement sent twice count once (see ``RedisStore.pop_results``).
* ``distpool:pool:<id>:messages`` (hash), what became of the pool's messages (a message's id
  is that of its first task, ``<pool>:<job>:<index>``): field ``<message id>``, its claim,
  ``<deadline ms> <worker process>`` while one runs it (see :mod:`distpool.worker.claims`)
  and ``done`` once its results are pushed; ``<message id>:redeliveries``, how often it was
  delivered again without having finished, counted by the workers that received it;
  ``<message id>:timed_out``, set when it was killed for running past its time limit. It
  goes with the pool, so nothing of it outlives the pool (or a day, if its client died).
* ``distpool:pool:<id>:blobs`` (hash): payloads too large for a message, as raw bytes (see
  :mod:`distpool.store.blobs`); it expires with the liveness key.
* ``distpool:run:<name>``: the client that holds the named run ``<name>`` (see
  :mod:`distpool.client.resume`), while it refreshes the key: a client of another host cannot
  take the run meanwhile.
* ``distpool:workers:<queue>`` (sorted set: worker name -> expiry time) and
  ``distpool:slots:<queue>`` (hash: worker name -> processes): who serves a queue.
* ``distpool:nodes:<queue>`` (hash: node name -> JSON record) and
  ``distpool:nodes-alive:<queue>`` (sorted set: node name -> expiry, ms on the Redis
  server's clock): what each node of slots runs, published by its parent for ``distpool
  status`` (see :mod:`distpool.store.nodes`).
"""

from __future__ import annotations


def live(pool_id: str) -> str:
    return f"distpool:pool:{pool_id}:live"


def info(pool_id: str) -> str:
    return f"distpool:pool:{pool_id}:info"


def results(pool_id: str) -> str:
    return f"distpool:pool:{pool_id}:results"


def received(pool_id: str) -> str:
    return f"distpool:pool:{pool_id}:received"


def acknowledged(pool_id: str) -> str:
    return f"distpool:pool:{pool_id}:acknowledged"


def messages(pool_id: str) -> str:
    return f"distpool:pool:{pool_id}:messages"


def blobs(pool_id: str) -> str:
    return f"distpool:pool:{pool_id}:blobs"


def pool_of(message_id: str) -> str:
    """The pool that sent ``message_id`` (``<pool>:<job>:<index>``)."""
    return message_id.partition(":")[0]


def messages_of(message_id: str) -> str:
    return messages(pool_of(message_id))


def result_blob(task_id: str, digest: str) -> str:
    """The name of a task's result among its pool's blobs: a run of the task that returns
    other bytes writes another blob, so a late duplicate never changes the one its record
    names."""
    return f"result:{task_id}:{digest}"


def run(name: str) -> str:
    return f"distpool:run:{name}"


def workers(queue: str) -> str:
    return f"distpool:workers:{queue}"


def slots(queue: str) -> str:
    return f"distpool:slots:{queue}"


def nodes(queue: str) -> str:
    return f"distpool:nodes:{queue}"


def nodes_alive(queue: str) -> str:
    return f"distpool:nodes-alive:{queue}"
