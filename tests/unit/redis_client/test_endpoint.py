"""Redis URLs read as redis-py (and so the workers' kombu transport) reads them."""

from __future__ import annotations

import pytest
from redis.connection import parse_url

from distpool import platform
from distpool.redis_client.endpoint import Endpoint


@pytest.fixture(autouse=True)
def posix(monkeypatch):
    """unix:// URLs are read as on POSIX, whatever runs the tests (see the Windows test)."""
    monkeypatch.setattr(platform, "windows", False)


@pytest.mark.parametrize("url", [
    "redis://",
    "redis://127.0.0.1:6391/0",
    "redis://cache/3",
    "redis://:secret@cache:6380/2",
    "redis://user%40corp:p%3Ass@cache:6380",
    "redis://cache:6380/?db=4",
    "redis://[::1]:6380/1",
    "rediss://cache:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem",
    "unix:///run/redis.sock?db=5",
    "unix://u:pw@/run/redis.sock",
])
def test_a_url_names_the_same_server_as_for_redis_py(url):
    endpoint = Endpoint.from_url(url)
    expected = parse_url(url)
    if expected.get("path") is not None:
        assert endpoint.path == expected["path"]
    else:
        assert (endpoint.host, endpoint.port) == (expected.get("host", "localhost"),
                                                  expected.get("port", 6379))
    assert endpoint.db == expected.get("db", 0)
    assert endpoint.username == expected.get("username")
    assert endpoint.password == expected.get("password")
    assert endpoint.tls == url.startswith("rediss://")


def test_the_options_that_say_how_to_connect_are_read():
    endpoint = Endpoint.from_url(
        "rediss://h/0?socket_timeout=2.5&socket_keepalive=no&health_check_interval=10"
        "&ssl_cert_reqs=none&ssl_check_hostname=false")
    assert endpoint.options == {"socket_timeout": 2.5, "socket_keepalive": False,
                                "health_check_interval": 10.0, "ssl_cert_reqs": "CERT_NONE",
                                "ssl_check_hostname": False}
    assert str(endpoint) == "Redis at h:6379"
    assert str(Endpoint.from_url("unix:///tmp/r.sock")) == "Redis at unix:/tmp/r.sock"


@pytest.mark.parametrize(("url", "message"), [
    ("sentinel://s1:26379", "starts with redis://, rediss:// or unix://, not sentinel://"),
    ("redis+socket:///tmp/r.sock", "not redis+socket://"),
    ("localhost:6379", "starts with redis://, rediss:// or unix://, and this has no scheme"),
    ("redis://h:99999/0", "port is not a number from 0 to 65535"),
    ("redis://h/zero", "path names no database number: '/zero'"),
    ("redis://h/0?max_retries=3", "option 'max_retries' is not one distpool reads"),
    ("redis://h/0?socket_timeout=soon", "socket_timeout='soon' is not valid"),
    ("rediss://h/0?ssl_cert_reqs=maybe", "ssl_cert_reqs is none, optional or required"),
])
def test_a_url_that_cannot_be_read_says_what_is_wrong(url, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace("?", r"\?")):
        Endpoint.from_url(url)


def test_a_unix_url_on_windows_says_it_cannot_be_used_there(monkeypatch):
    monkeypatch.setattr(platform, "windows", True)
    with pytest.raises(ValueError, match="unix:// URLs cannot be used on Windows"):
        Endpoint.from_url("unix:///run/redis.sock?db=5")
    assert Endpoint.from_url("redis://cache:6380/0").port == 6380
