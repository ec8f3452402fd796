"""The default process model of ``distpool worker``: one worker process per slot.

* :mod:`.parent`: the parent, which starts, watches and replaces the slots;
* :mod:`.child`: what runs in a slot: ``run_slot``, the process's target, its Celery pool
  and its reports to the parent;
* :mod:`.state`: the files through which slots tell their parent what they run, and their
  directory (removed by the next start when a node is killed);
* :mod:`.recovery`: what becomes of the messages of a slot that is gone;
* :mod:`.report`: the node's record of what its slots run, for ``distpool status``;
* :mod:`.restarts`: how often a process that keeps dying is restarted.
"""
