"""The out-of-band data path against real Redis and real workers: what a worker does with a
blob that is not what its envelope says, what a key it does not hold can make it fetch, what
the store keeps and for how long, and what the caller hears when data cannot travel."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy
import psutil
import pytest
import redis

import distpool
from distpool.errors import AuthenticationError, EnvelopeError, PayloadTooLargeError
from distpool.store import keys
from distpool.wire import serialization
from distpool.wire.envelope import ResultRecord, TaskEnvelope
from distpool.wire.signing import Signer
from distpool.worker.runner import TaskRunner

pytestmark = pytest.mark.integration

MB = 2**20
KEY = Signer(b"the cluster's key")


def total(array):
    return float(array.sum())



def ones(megabytes):
    return numpy.ones(megabytes * MB // 8)


def length(data):
    return len(data)


def leave_mark(path):
    """What a trap's pickle calls when it is loaded: it must never be."""
    Path(path).write_text("loaded")
    return path


class Trap:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return leave_mark, (self.path,)


# -- a worker process's runner, against a real store -----------------------------------------

def run_message(store, signer, arguments, damage=lambda client, key: None, redis_url=None):
    """Stage ``arguments`` as a blob under ``KEY``, damage it, have a runner holding
    ``signer`` run the message, and return the one result record it pushed."""
    pool_id = uuid.uuid4().hex
    store.refresh_pool(pool_id, 60, {})
    payload = serialization.dumps(((arguments,), {}))
    ref = store.blobs.put(pool_id, payload.digest, payload, "arguments", ttl=60)
    damage(redis.Redis.from_url(redis_url), keys.blobs(pool_id))
    envelope = TaskEnvelope(pool_id, f"{pool_id}:0:0", "apply", serialization.dumps(length),
                            ref)
    runner = TaskRunner(store, signer, claim_ttl=30, flags_redeliveries=True)
    runner.run([envelope.to_wire(KEY)], envelope.task_id, redelivered=False,
               raise_soft_limit_after=None)
    [raw] = store.pop_results(pool_id, 5)
    return ResultRecord.from_bytes(raw, KEY, pool_id)


@pytest.mark.parametrize("damage, message", [
    (lambda client, key: client.delete(key), "missing"),
    (lambda client, key: client.pexpire(key, 1) and time.sleep(0.05), "missing"),
    (lambda client, key: client.hdel(key, *[f for f in client.hkeys(key)
                                            if f.endswith(b"/1")]), "cut short"),
    (lambda client, key: [client.hset(key, f, client.hget(key, f) + b"!")
                          for f in client.hkeys(key) if f.endswith(b"/0")], "longer than"),
    (lambda client, key: [client.hset(key, f, b"\0" * len(client.hget(key, f)))
                          for f in client.hkeys(key) if f.endswith(b"/1")], "does not match"),
])
def test_a_damaged_argument_blob_fails_its_task_saying_how(store, redis_server, damage,
                                                            message):
    record = run_message(store, KEY, b"x" * (3 * MB // 2), damage, redis_server.url(5))
    assert not record.ok
    error, _ = serialization.loads(record.payload)
    assert isinstance(error, EnvelopeError) and message in str(error)


def test_an_intact_blob_runs(store, redis_server):
    record = run_message(store, KEY, b"x" * (3 * MB // 2), redis_url=redis_server.url(5))
    assert record.ok and serialization.loads(record.payload) == 3 * MB // 2


def test_a_message_under_another_key_is_refused_before_its_blob_is_fetched(store, redis_server,
                                                                           tmp_path):
    mark = tmp_path / "mark"
    record = run_message(store, Signer(b"another key"), [Trap(str(mark)), b"x" * MB],
                         redis_url=redis_server.url(5))
    assert record.rejected is not None and "signature" in record.rejected
    assert not mark.exists()


# -- pools on a real cluster ----------------------------------------------------------------

def sum_after_logging(path, array, seconds):
    """Log this process's pid, wait, and return the array's sum and a large result."""
    with open(path, "a") as log:
        log.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return float(array.sum()), numpy.full(array.size, 2.0)


def runs(log):
    return log.read_text().split() if log.exists() else []


def wait_for_runs(log, count, timeout=30):
    deadline = time.monotonic() + timeout
    while len(runs(log)) < count:
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)


def test_a_task_whose_slot_is_killed_runs_again_on_its_blob(make_cluster, tmp_path):
    cluster = make_cluster(nodes=1, concurrency=2, extra_args=["--worker-lost-timeout", "2"])
    log = tmp_path / "runs.log"
    array = numpy.arange(3 * MB // 8, dtype=numpy.float64)
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        result = pool.apply_async(sum_after_logging, (str(log), array, 3))
        wait_for_runs(log, 1)
        os.kill(int(runs(log)[0]), signal.SIGKILL)
        answer, back = result.get(timeout=60)
    assert answer == float(array.sum()) and (back == 2.0).all() and back.size == array.size
    assert len(runs(log)) == 2  # killed once, then run to the end


def test_data_survives_restarts_of_a_persistent_redis(make_cluster_on_own_redis, tmp_path):
    cluster = make_cluster_on_own_redis(persistent=True, concurrency=2,
                                        extra_args=["--worker-lost-timeout", "3"])
    log = tmp_path / "runs.log"
    array = numpy.arange(3 * MB // 8, dtype=numpy.float64)
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        result = pool.apply_async(sum_after_logging, (str(log), array, 8))
        wait_for_runs(log, 1)
        for _ in range(2):
            cluster.redis.restart(down_for=1.0)
            time.sleep(1.0)
        answer, back = result.get(timeout=60)
        assert answer == float(array.sum()) and (back == 2.0).all()
        assert pool.apply(total, (array,)) == float(array.sum())  # and the pool goes on
    assert len(runs(log)) == 1, "the task ran more than once"


def test_data_goes_out_of_band_and_leaves_nothing_behind(shared_cluster):
    client = shared_cluster.redis.client
    arrays = [numpy.random.default_rng(i).random(2 * MB // 8) for i in range(6)]
    # ship=False: the bundle of this test's package would stay among the blobs for the
    # pool's life (for workers that join late); the workers import it from the repository.
    with distpool.Pool(2, **shared_cluster.pool_kwargs(), pool_ttl=20, ship=False) as pool:
        blobs = keys.blobs(pool._pool_id)
        seen_ttl = []
        result = pool.map_async(total, arrays, chunksize=1)
        while not result.ready():
            seen_ttl.append(client.pttl(blobs))
            time.sleep(0.005)
        assert result.get() == [float(a.sum()) for a in arrays]
        assert max(seen_ttl) <= 20_000 and max(seen_ttl) > 0  # it lives with the pool
        back = pool.map(ones, [2, 3], chunksize=1)
        assert [a.size for a in back] == [2 * MB // 8, 3 * MB // 8]
        deadline = time.monotonic() + 10
        while client.hlen(blobs) and time.monotonic() < deadline:
            time.sleep(0.1)  # the arguments' blobs go at the next round trip after they end
        assert client.hlen(blobs) == 0
        pool.close()
        pool.join()
    assert not client.exists(blobs)


def test_a_large_global_is_fetched_once_per_worker_process(shared_cluster):
    main = sys.modules["__main__"]
    main.TABLE = numpy.arange(4 * MB // 8, dtype=numpy.float64)
    exec("def lookup(i):\n    return float(TABLE[i])", main.__dict__)
    client = shared_cluster.redis.client
    try:
        with distpool.Pool(2, **shared_cluster.pool_kwargs()) as pool:
            before = client.info("stats")["total_net_output_bytes"]
            assert pool.map(main.lookup, range(60), chunksize=1) == [float(i) for i in range(60)]
            sent = client.info("stats")["total_net_output_bytes"] - before
    finally:
        del main.TABLE, main.lookup
    slots = 4  # the shared cluster's: 2 nodes x 2 processes
    # Once per worker process that ran one (60 copies, had it travelled with every task).
    assert sent < (slots + 1) * 4 * MB, f"{sent / MB:.1f} MB read from Redis"


def test_the_client_holds_only_what_is_in_flight(shared_cluster):
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.wait(0.01):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with distpool.Pool(2, **shared_cluster.pool_kwargs()) as pool:
            items = (bytes([i]) * (5 * MB) for i in range(40))  # 200 MB in all
            assert list(pool.imap(length, items)) == [5 * MB] * 40
    finally:
        done.set()
        sampler.join()
    assert peak[0] - baseline < 100 * MB, f"grew {(peak[0] - baseline) / MB:.0f} MB"


def test_data_larger_than_the_store_has_room_for_fails_naming_its_size(
        make_cluster_on_own_redis):
    cluster = make_cluster_on_own_redis(nodes=1, concurrency=1)
    cluster.redis.client.config_set("maxmemory", 40 * MB)
    with distpool.Pool(1, **cluster.pool_kwargs()) as pool:
        started = time.monotonic()
        with pytest.raises(PayloadTooLargeError) as info:
            pool.apply(total, (numpy.ones(64 * MB // 8),))
        assert "the arguments of task" in str(info.value) and "64.0 MiB" in str(info.value)
        assert "maxmemory" in str(info.value)
        with pytest.raises(PayloadTooLargeError, match=r"the result of task .*64\.0 MiB"):
            pool.apply(ones, (64,))
        assert time.monotonic() - started < 30
        assert pool.apply(total, (numpy.ones(MB // 8),)) == MB // 8  # and it serves on
    assert not isinstance(info.value, AuthenticationError)
