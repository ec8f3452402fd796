"""What runs in a worker process.

* :mod:`.execute`: runs one task envelope, the only place where user code is executed (the
  eager backend calls it too).
* :mod:`.runner` and :mod:`.claims`: a Celery message's tasks, claimed, run, their results
  pushed; :mod:`.failures`: what Celery itself records as failed.
* :mod:`.app` and :mod:`.steps`: the Celery app ``distpool worker`` runs.
* :mod:`.slots`: the default process model, one worker process per slot under a parent.
"""
