"""What runs in the user's process: ``Pool``, ``Executor`` and their results.

The data flow through one pool (an ``Executor`` runs on a pool of its own):

|====================== the caller's process ======================|==== out of process =====|

+--------------+  tasks    +------------+      +------------+   publish   +------------------+
|              |  (job,    | Sources    |      |            | ==========> |   broker queue   |
|              |   chunk)  |------------| ===> | dispatcher |             +------------------+
|              | ========> | job 7      |      |   thread   |                      ||
|  caller's    |           | job 8 ...  |      |            |                      vv
|   threads    |           +------------+      +------------+             +------------------+
|              |                                    ^^                    |     workers      |
|  Pool.map,   |  results  +------------+           ||  in flight:        +------------------+
|  apply,      |           | Jobs       |           vv  wire id -> task           ||
|  imap, ...   | ========> |------------|      +------------+   records            vv
|  Executor    |           | 7: result  | <==> | collector  | <========== +------------------+
|  .submit     |           | 8: result  |      |   thread   |     pop     |   result store   |
|              |           +------------+      +------------+             +------------------+
|              |                                    ||
|  .get(),     |   outcomes, callbacks         +------------+
|  next()      | <============================ |  delivery  |
|              |                               |   thread   |
+--------------+                               +------------+

One ``apply`` on a Redis broker, step by step, each in the module that does it:

1. **The call** (caller's thread). ``Pool.apply_async`` (:mod:`.pool`) serialises the
   function and its arguments, with the bundles and versions of the modules they need
   (:class:`.shipping.Serialiser`), makes the task and its envelope, ``<pool>:<job>:0`` on the
   wire (:class:`.tasks.TaskMaker`), and hands the engine its result object and its source
   (``Engine.submit``, :mod:`.engine`).
2. **Out** (dispatcher thread). The engine takes the task from the jobs' sources, in
   submission order, several short ones a message (:class:`.sources.Sources`), files it in
   flight (:mod:`.flight`), puts large payloads in the result store as blobs
   (:class:`.staging.Stager`), signs the message (:meth:`~distpool.wire.messages.TaskMessage.of`)
   and publishes it: one ``LPUSH`` (:class:`~distpool.brokers.redis_publisher.RedisPublisher`).
3. **The worker** (another process, maybe another machine: :mod:`distpool.worker`) takes the
   message, claims it, runs the task and pushes the signed result record onto the pool's list.
4. **Back** (collector thread). The engine pops the record
   (:meth:`~distpool.store.redis_store.RedisStore.pop_results`), authenticates it
   (:meth:`~distpool.wire.envelope.ResultRecord.from_bytes`) and takes the task out of flight,
   which frees its slot for the dispatcher.
5. **The outcome** (delivery thread, or the collector itself when nothing waits before it and
   no callback runs: :mod:`.delivery`) loads the payload and completes the result object
   (:mod:`.results`); ``get()`` returns on the caller's thread.

The engine holds what carries tasks and results (:mod:`distpool.transports`): a publisher and a
result store. In eager mode they run each task as it is published, in this process, and keep
its record in memory; nothing else changes. An ``imap`` input is read only as far ahead of its
consumer as its ``buffersize`` allows (:mod:`.sources`); the collector also keeps the pool's
liveness key fresh, and has the dispatcher send again the messages no worker holds
(:mod:`.watch`).
"""
