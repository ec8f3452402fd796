"""What runs in a worker process.

* :mod:`.node`: running a worker node, ``run()``, which ``distpool worker`` calls and which
  chooses the process model (the slots, or a Celery pool).
* :mod:`.execute`: runs one task envelope, the only place where user code is executed (the
  eager backend calls it too).
* :mod:`.runner` and :mod:`.claims`: a Celery message's tasks, claimed, run, their results
  pushed; :mod:`.failures`: what Celery itself records as failed.
* :mod:`.app` and :mod:`.steps`: the Celery app a worker runs.
* :mod:`.slots`: the default process model, one worker process per slot under a parent.

This package imports nothing itself: the eager backend imports :mod:`.execute` in the
client, which must not import Celery for it.
"""
