from __future__ import annotations

import pytest

from distpool import config


def test_defaults():
    settings = config.resolve(environ={})
    assert settings.broker_url is None and settings.result_url is None  # a local cluster
    assert settings.queue == "distpool"
    assert settings.eager is False
    assert settings.pool_ttl == config.DEFAULT_POOL_TTL


def test_environment_overrides_defaults_and_arguments_override_environment():
    env = {"DISTPOOL_BROKER_URL": "redis://env:6379/1", "DISTPOOL_QUEUE": "envq",
           "DISTPOOL_RESULT_URL": "redis://results:6379/2", "DISTPOOL_EAGER": "yes",
           "DISTPOOL_POOL_TTL": "12.5"}
    from_env = config.resolve(environ=env)
    assert (from_env.broker_url, from_env.queue, from_env.result_url, from_env.eager,
            from_env.pool_ttl) == ("redis://env:6379/1", "envq", "redis://results:6379/2",
                                   True, 12.5)
    explicit = config.resolve(broker="redis://arg:6379/0", queue="argq",
                              result_url="redis://r:1/0", eager=False, pool_ttl=3, environ=env)
    assert (explicit.broker_url, explicit.queue, explicit.result_url, explicit.eager,
            explicit.pool_ttl) == ("redis://arg:6379/0", "argq", "redis://r:1/0", False, 3.0)


def test_with_broker_fills_in_the_result_store_unless_configured():
    local = config.resolve(environ={}).with_broker("redis://127.0.0.1:5555/0")
    assert local.result_url == "redis://127.0.0.1:5555/0"
    configured = config.resolve(result_url="redis://r:1/0", environ={})
    assert configured.with_broker("redis://b:2/0").result_url == "redis://r:1/0"


def test_redis_broker_doubles_as_result_store_but_amqp_does_not():
    assert config.resolve(broker="rediss://h:6380/3", environ={}).result_url == "rediss://h:6380/3"
    # Not a Redis of each worker's guessing: every host must reach the same store.
    with pytest.raises(ValueError, match=r"AMQP broker \(amqp://guest:\*\*\*@.*result_url"):
        config.resolve(broker="amqp://guest:guest@localhost:5672//", environ={})
    amqp = config.resolve(broker="amqp://guest:guest@localhost:5672//",
                          result_url="redis://r:1/0", environ={})
    assert amqp.result_url == "redis://r:1/0"
    with pytest.raises(ValueError, match="result_url"):
        config.resolve(environ={"DISTPOOL_BROKER_URL": "amqps://rabbit//"})


@pytest.mark.parametrize("env", [{"DISTPOOL_EAGER": "maybe"}, {"DISTPOOL_POOL_TTL": "soon"},
                                 {"DISTPOOL_POOL_TTL": "-1"}])
def test_invalid_environment_values_are_named(env):
    with pytest.raises(ValueError, match=next(iter(env))):
        config.resolve(environ=env)


@pytest.mark.parametrize("url, masked", [
    ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
    ("amqp://user:pw@rabbit//", "amqp://user:***@rabbit//"),
    ("rediss://u:p@[::1]:6380/1", "rediss://u:***@[::1]:6380/1"),
    ("redis://host:6379/0", "redis://host:6379/0"),
])
def test_mask_url_hides_passwords(url, masked):
    assert config.mask_url(url) == masked


def test_settings_repr_hides_passwords():
    settings = config.resolve(broker="redis://:topsecret@h:1/0", environ={})
    assert "topsecret" not in repr(settings)


@pytest.mark.parametrize("argument, variable, entries", [
    (None, None, ("auto",)), (None, "auto", ("auto",)), (None, "off", ()), (None, "0", ()),
    (None, "1", ("auto",)), (None, "forecast, helpers.py", ("forecast", "helpers.py")),
    (False, "forecast", ()), ("auto", "off", ("auto",)), (["forecast", "auto"], None,
                                                          ("forecast", "auto")),
    ("forecast,tables/a.csv", None, ("forecast", "tables/a.csv"))])
def test_what_to_ship(argument, variable, entries):
    environ = {} if variable is None else {"DISTPOOL_SHIP": variable}
    assert config.resolve(ship=argument, environ=environ).ship == entries


@pytest.mark.parametrize("argument, error", [([], ValueError), (3, TypeError), ([None], TypeError)])
def test_a_ship_that_is_neither_a_flag_nor_a_list_of_names_is_refused(argument, error):
    with pytest.raises(error, match="ship"):
        config.resolve(ship=argument, environ={})


def test_strict_versions_from_the_argument_or_the_environment():
    assert config.resolve(environ={}).strict_versions is False
    assert config.resolve(environ={"DISTPOOL_STRICT_VERSIONS": "1"}).strict_versions is True
    assert config.resolve(strict_versions=False,
                          environ={"DISTPOOL_STRICT_VERSIONS": "1"}).strict_versions is False
    with pytest.raises(ValueError, match="DISTPOOL_STRICT_VERSIONS"):
        config.resolve(environ={"DISTPOOL_STRICT_VERSIONS": "sometimes"})


def test_resume_window_from_the_argument_or_the_environment():
    assert config.resolve(environ={}).resume_window == config.DEFAULT_RESUME_WINDOW == 3600
    assert config.resolve(environ={"DISTPOOL_RESUME_WINDOW": "600"}).resume_window == 600
    assert config.resolve(resume_window=60,
                          environ={"DISTPOOL_RESUME_WINDOW": "600"}).resume_window == 60
    with pytest.raises(ValueError, match="DISTPOOL_RESUME_WINDOW must be positive"):
        config.resolve(environ={"DISTPOOL_RESUME_WINDOW": "0"})
    with pytest.raises(ValueError, match="resume_window must be positive"):
        config.resolve(resume_window=-5, environ={})
