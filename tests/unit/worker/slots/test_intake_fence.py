"""What of Celery a slot's own consumer (``distpool/worker/slots/intake.py``) relies on is
there, with the parameters it passes: the request it makes for ``inspect`` and revokes, the
worker state it registers that request in, the log lines it writes as Celery does, and the
``celery worker`` option that leaves the queue to it.

Celery is bounded to the versions tested (setup.cfg); one that reshapes these fails here."""

from __future__ import annotations

import inspect

from celery.app import trace
from celery.bin.worker import worker as worker_command
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer
from celery.worker.request import Request
from kombu.message import Message
from kombu.transport import redis as kombu_redis


def test_a_request_is_made_from_a_decoded_body():
    parameters = inspect.signature(Request.__init__).parameters
    for name in ("message", "hostname", "app", "connection_errors", "task", "body",
                 "decoded"):
        assert name in parameters
    assert list(inspect.signature(Request.on_accepted).parameters) == [
        "self", "pid", "time_accepted"]
    for name in ("args", "argsrepr", "kwargsrepr", "delivery_info", "request_dict",
                 "message"):
        assert isinstance(inspect.getattr_static(Request, name), property), name
    source = inspect.getsource(Request.__init__)
    assert "self.id = " in source and "self.name = " in source
    assert Request.time_limits == (None, None)  # unless the message sets its own


def test_a_message_carries_what_the_request_reads():
    parameters = inspect.signature(Message.__init__).parameters
    for name in ("body", "delivery_tag", "content_type", "content_encoding",
                 "delivery_info", "properties", "headers"):
        assert name in parameters


def test_the_worker_state_registers_requests():
    assert list(inspect.signature(worker_state.task_reserved).parameters)[:1] == ["request"]
    assert list(inspect.signature(worker_state.task_ready).parameters)[:1] == ["request"]
    assert "x" not in worker_state.revoked  # a set of ids
    assert hasattr(worker_state, "should_stop")


def test_celery_s_log_lines_are_there_to_be_written_alike():
    assert trace.LOG_RECEIVED.startswith("Task %(name)s[%(id)s] received")
    assert trace.LOG_SUCCESS.startswith("Task %(name)s[%(id)s] succeeded in %(runtime)ss")


def test_a_consumer_step_is_told_of_the_shutdown_apart_from_a_stop():
    # stop: a reconnection, after which the step starts again; shutdown: the worker's end.
    assert "send_all(parent, 'shutdown')" in inspect.getsource(Consumer.Blueprint.shutdown)
    assert "blueprint.shutdown(self)" in inspect.getsource(Consumer.shutdown)


def test_celery_worker_can_leave_a_queue_unconsumed():
    assert "exclude_queues" in [parameter.name for parameter in worker_command.params]
    # ... and its channel's connection for blocking waits can be closed.
    assert isinstance(inspect.getattr_static(kombu_redis.Channel, "async_pool"), property)
