"""The default process model of ``distpool worker``: one worker process per slot.

* :mod:`.parent`: the parent, which starts, watches and replaces the slots;
* :mod:`.child`: what runs in a slot (its Celery pool, and its reports to the parent);
* :mod:`.state`: the file through which a slot tells its parent what it runs;
* :mod:`.recovery`: what becomes of the messages of a slot that is gone;
* :mod:`.restarts`: how often a process that keeps dying is restarted.
"""
