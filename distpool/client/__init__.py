"""What runs in the user's process: ``Pool``, ``Executor`` and their results.

The data flow through one pool (an ``Executor`` runs on a pool of its own):

|====================== the caller's process ======================|==== out of process =====|

+--------------+  tasks    +------------+      +------------+   publish   +------------------+
|              |  (job,    | Sources    |      |            | ==========> |   broker queue   |
|              |   index)  |------------| ===> | dispatcher |             +------------------+
|              | ========> | job 7      |      |   thread   |                      ||
|  caller's    |           | job 8 ...  |      |            |                      vv
|   threads    |           +------------+      +------------+             +------------------+
|              |                                    ^^                    |     workers      |
|  Pool.map,   |  results  +------------+           ||  in flight:        +------------------+
|  apply,      |           | Jobs       |           vv  wire id -> task           ||
|  imap, ...   | ========> |------------|      +------------+   records            vv
|  Executor    |           | 7: result  | <==> | collector  | <========== +------------------+
|  .submit     |           | 8: result  |      |   thread   |    fetch    |   result store   |
|              |           +------------+      +------------+             +------------------+
|              |                                    ||
|  .get(),     |   outcomes, callbacks         +------------+
|  next()      | <============================ |  delivery  |
|              |                               |   thread   |
+--------------+                               +------------+

* On the **caller's threads**, ``Pool.apply_async``, ``map``, ``imap``... (and
  ``Executor.submit``, through the pool's :class:`~.pool.Calls`) serialise the callable and
  its arguments, number the call as a job, and hand the :class:`~.engine.Engine` a result
  object, filed in *Jobs*, and the job's tasks, queued in *Sources*. A task is
  ``(job, index)``, chunk ``index`` of job ``job``; its envelope names it
  ``<pool>:<job>:<index>`` on the wire (:mod:`.tasks`).
* The **dispatcher** takes tasks in submission order while fewer than ``processes`` messages
  are in flight, packs short ones several to a message (:mod:`.batching`), files each task
  *in flight* under its wire name, and publishes the messages through the pool's backend
  (:mod:`distpool.backends`). An ``imap`` input is read only as far ahead of its consumer
  as its ``buffersize`` allows (:mod:`.sources`): the consumer's ``next()`` wakes it.
* **Workers** run the tasks and push signed result records onto the pool's list in the
  result store.
* The **collector** fetches the records, authenticates them, and takes their tasks out of
  *in flight*, which frees a slot for the dispatcher; each outcome goes, with the job's
  result object from *Jobs*, to the delivery thread. It also keeps the pool's liveness key
  fresh, and watches the messages no worker holds (:mod:`.watch`), which the dispatcher
  sends again.
* The **delivery** thread (:mod:`.delivery`) loads the payloads and completes the result
  objects (:class:`~.results.JobResult`) in completion order: callbacks run there, then
  ``get()`` and ``next()`` return on the caller's threads. A result without callbacks, with
  nothing queued before it, is completed by the collector itself, a thread hop sooner.
"""
