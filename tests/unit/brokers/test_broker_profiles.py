"""One decision per broker URL (distpool.brokers.profiles), and where it shows."""

from __future__ import annotations

import re

import pytest

from distpool.brokers import profiles, redis_transport
from distpool.brokers.celery_app import new_app
from distpool.cli import main
from distpool.config import resolve


@pytest.mark.parametrize(("url", "profile"), [
    ("redis://127.0.0.1:6379/0", profiles.REDIS),
    ("rediss://cache:6380/0?ssl_cert_reqs=required", profiles.REDIS),
    ("amqp://guest:guest@rabbit:5672//", profiles.AMQP),
    ("amqps://guest:guest@rabbit:5671//", profiles.AMQP),
    ("pyamqp://rabbit//", profiles.AMQP),
])
def test_each_supported_scheme_has_its_profile(url, profile):
    assert profiles.profile_for(url) is profile


@pytest.mark.parametrize("url", ["redis+socket:///tmp/redis.sock", "sentinel://s1:26379",
                                 "sqs://", "localhost:6379"])
def test_an_unsupported_broker_is_refused_naming_its_scheme(url):
    scheme = url.split("://")[0] if "://" in url else url
    with pytest.raises(ValueError, match=re.escape(f"does not support '{scheme}' brokers")):
        profiles.profile_for(url)
    with pytest.raises(ValueError, match="does not support"):
        resolve(broker=url, result_url="redis://r:1/0", environ={})


def test_the_redis_profile_names_distpool_s_transport():
    assert profiles.REDIS.transport == redis_transport.TRANSPORT
    settings = resolve(broker="redis://h:1/0", secret="k" * 32, environ={})
    assert new_app(settings).conf.broker_transport == redis_transport.TRANSPORT


def test_distpool_worker_refuses_an_amqp_broker_without_a_result_store(capsys):
    assert main(["worker", "--broker", "amqp://guest:guest@127.0.0.1:5672//",
                 "--secret-file", "/dev/null", "--insecure"]) == 2
    assert "holds no results" in capsys.readouterr().err


def test_a_result_store_may_be_what_is_refused_as_a_broker():
    settings = resolve(broker="redis://h:1/0", result_url="unix:///run/r.sock?db=2", environ={})
    assert settings.result_url == "unix:///run/r.sock?db=2"


@pytest.mark.parametrize(("url", "message"), [
    ("sentinel://s1:26379", "starts with redis://, rediss:// or unix://, not sentinel://"),
    ("redis://:pw@h/0?retries=2", "option 'retries' is not one distpool reads"),
])
def test_a_result_store_url_distpool_cannot_read_is_refused_at_once(url, message):
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        resolve(broker="redis://h:1/0", result_url=url, environ={})
    assert "pw" not in str(raised.value)
