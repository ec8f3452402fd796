"""Which Redis a server is, and whether distpool can use it: Redis 6.2 or newer.

The broker's workers take messages with ``BLMOVE``, and the clients take results with it,
Redis 6.2. An older server accepts connections and most commands,
then fails the first of those, deep inside a worker or a collector; so the client refuses it
at ``Pool()``, ``distpool worker`` at its start, and the local cluster when its server
starts, each naming the version found and the version needed.

The version is ``INFO server``'s ``redis_version``: what Redis-compatible servers report
their compatibility in too (Memurai, Valkey and KeyDB give their own version in another
field). A server that does not say (``INFO`` refused to an ACL user, say) is let through.
"""

from __future__ import annotations

import re

from ..errors import UnsupportedRedisError
from ..retry import RetryPolicy
from .connection import Connection
from .protocol import ReplyError

#: The oldest Redis distpool works with, and what it needs of it.
MINIMUM = (6, 2, 0)
#: What a refusal says is needed.
NEEDED = (f"distpool needs Redis {MINIMUM[0]}.{MINIMUM[1]} or newer (it uses BLMOVE)")

#: The command that reads the version: in place of a ``PING``, it proves the server answers.
INFO_SERVER = ("INFO", "server")

_FIELD = re.compile(rb"^redis_version:([^\r\n]*)", re.MULTILINE)
_NUMBERS = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse(text: str) -> tuple[int, int, int] | None:
    """The version a ``redis_version`` value names, as numbers (``5.0.14.1``, a Windows
    port's, is 5.0.14; ``7.2.0-memurai`` is 7.2.0); None if it names none."""
    found = _NUMBERS.match(text.strip())
    if found is None:
        return None
    major, minor, patch = (int(part or 0) for part in found.groups())
    return major, minor, patch


def from_info(info: object) -> str | None:
    """The ``redis_version`` in a reply to ``INFO server``, as reported; None if none."""
    found = _FIELD.search(info) if isinstance(info, bytes) else None
    return None if found is None else found.group(1).decode("ascii", "replace").strip()


def redis_version(connection: Connection) -> str | None:
    """The version of the Redis that ``connection`` reaches, as it reports it (one
    ``INFO server``); None if it does not say. Raises what the connection raises if the
    server cannot be reached."""
    try:
        [info] = connection.run([INFO_SERVER])
    except ReplyError:  # INFO not allowed (an ACL, a renamed command): it answered, though
        return None
    return from_info(info)


def too_old(version: str | None) -> bool:
    """Whether ``version`` (as reported) is older than :data:`MINIMUM` (a version that
    names no number is not)."""
    numbers = None if version is None else parse(version)
    return numbers is not None and numbers < MINIMUM


def require_minimum(version: str | None, where: str) -> None:
    """Raise :class:`~distpool.errors.UnsupportedRedisError` if ``version`` (as reported)
    is older than :data:`MINIMUM`; ``where`` names the server (``the Redis at host:port``)."""
    if too_old(version):
        raise UnsupportedRedisError(f"{where} is version {version}; {NEEDED}")


#: The servers (host and port, or socket path) this process has found recent enough: a
#: later pool's ping on one of them is a ``PING`` again.
_recent_enough: set[tuple[str, int, str | None]] = set()


def check(connection: Connection, role: str) -> None:
    """Raise :class:`~distpool.errors.UnsupportedRedisError` if the Redis that ``connection``
    reaches, the ``role`` (``broker``, ``result store``), is too old for distpool; raise
    what the connection raises if it cannot be reached. One command: ``INFO server`` the
    first time this process checks that server, a ``PING`` after it passed."""
    endpoint = connection.endpoint
    server = (endpoint.host, endpoint.port, endpoint.path)
    if server in _recent_enough:
        connection.run([("PING",)])
        return
    require_minimum(redis_version(connection), f"the {endpoint} (the {role})")
    _recent_enough.add(server)


def check_url(url: str, role: str, timeout: float = 5.0) -> None:
    """:func:`check` the Redis at ``url`` on a connection of its own, tried once, whose
    connect and reply may each take ``timeout`` seconds."""
    connection = Connection(url, timeout=timeout, connect_timeout=timeout,
                            retry=RetryPolicy(retries=0))
    try:
        check(connection, role)
    finally:
        connection.close()
