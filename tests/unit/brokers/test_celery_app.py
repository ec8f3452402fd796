"""The Celery apps that distpool's clients and workers build: settings only, no services."""

from __future__ import annotations

import warnings

import pytest

from distpool.brokers import redis_transport
from distpool.brokers.celery_app import (
    TASK_NAME,
    client_app,
    hold_renewal_interval,
    new_app,
    transport_options,
)
from distpool.config import resolve
from distpool.worker.app import create_app


def settings(broker: str = "redis://127.0.0.1:6379/0"):
    return resolve(broker=broker, result_url="redis://127.0.0.1:6379/0", secret="k" * 32,
                   environ={})


@pytest.mark.parametrize(("broker", "transport"), [
    ("redis://127.0.0.1:6379/0", redis_transport.TRANSPORT),
    ("rediss://127.0.0.1:6380/0", redis_transport.TRANSPORT),  # TLS: kombu's, underneath
    # kombu derives AMQP settings from the URL's scheme: left to it.
    ("amqp://guest:guest@127.0.0.1:5672//", None),
])
def test_redis_brokers_get_distpool_s_transport(broker, transport):
    assert new_app(settings(broker)).conf.broker_transport == transport


def test_each_app_runs_its_own_task_and_a_second_app_raises_no_warning():
    # Two pools in one process build two apps; each must keep its own task (and runner).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = create_app(settings())
        second = create_app(settings())
        tasks = [app.tasks[TASK_NAME] for app in (first, second)]
    assert tasks[0] is not tasks[1]
    assert tasks[0].app is first
    assert tasks[1].app is second


def test_clients_with_the_same_settings_share_one_app_and_others_get_their_own():
    app = client_app(settings())
    assert client_app(settings()) is app  # equal settings, built anew
    other = resolve(broker="redis://127.0.0.1:6379/0", result_url="redis://127.0.0.1:6379/0",
                    queue="another", secret="k" * 32, environ={})
    assert client_app(other) is not app
    assert client_app(other).conf.task_default_queue == "another"


def test_a_client_s_app_carries_no_worker_bootsteps_or_task():
    app = client_app(settings())
    assert TASK_NAME not in app.tasks
    assert not any(step.__module__.startswith("distpool") for step in app.steps["worker"])


def test_the_slots_of_a_node_take_turns_sweeping_lapsed_holds():
    alone = transport_options(settings())
    assert alone["unacked_restore_interval"] == hold_renewal_interval(settings())
    assert alone["distpool_sweepers"] == 1
    # 16 slots each sweep at one turn in 16: the node as often as one worker.
    node = create_app(settings(), sweepers=16).conf.broker_transport_options
    assert node["distpool_sweepers"] == 16
    assert node["unacked_restore_interval"] == alone["unacked_restore_interval"]
