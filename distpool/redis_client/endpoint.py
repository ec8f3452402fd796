"""Where a Redis server is and how to reach it, read from a ``redis://``, ``rediss://`` (TLS)
or ``unix://`` URL as redis-py reads one, so that a URL means the same to a client's own
connections and to a worker's kombu transport (which uses redis-py).

Of redis-py's query options it takes those that say how to reach the server (``db``,
timeouts, keepalive, ``health_check_interval``, and the ``ssl_*`` options of a TLS
connection), and refuses any other by name rather than ignoring it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from .. import platform
from ..flags import parse_flag

if TYPE_CHECKING:
    import ssl

SCHEMES = ("redis", "rediss", "unix")


def _flag(text: str) -> bool:
    value = parse_flag(text)
    if value is None:
        raise ValueError(f"{text!r} is not a yes or no")
    return value


#: Query option -> how its text is read.
_OPTIONS: dict[str, Callable[[str], Any]] = {
    "db": int,
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "socket_keepalive": _flag,
    "health_check_interval": float,
    "ssl_cert_reqs": str,
    "ssl_ca_certs": str,
    "ssl_ca_path": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_password": str,
    "ssl_check_hostname": _flag,
}
#: How ``ssl_cert_reqs`` may say whether the server's certificate is checked.
_CERT_REQS = {"none": "CERT_NONE", "optional": "CERT_OPTIONAL", "required": "CERT_REQUIRED",
              "cert_none": "CERT_NONE", "cert_optional": "CERT_OPTIONAL",
              "cert_required": "CERT_REQUIRED"}


class Endpoint(NamedTuple):
    """A Redis server and how to talk to it. ``options`` holds the URL's query options, read
    (see ``_OPTIONS``); ``tls`` says whether the connection is wrapped in TLS."""

    host: str
    port: int
    path: str | None  # a Unix socket's, instead of host and port
    tls: bool
    db: int
    username: str | None
    password: str | None
    options: dict[str, Any]

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """The endpoint ``url`` names; ``ValueError`` saying what is wrong with it."""
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES or "://" not in url:
            found = f"not {parts.scheme}://" if "://" in url else "and this has no scheme"
            raise ValueError(f"a Redis URL starts with redis://, rediss:// or unix://, {found}")
        if parts.scheme == "unix" and platform.windows:
            raise ValueError("unix:// URLs cannot be used on Windows, which has no Unix "
                             "sockets here: give the Redis's redis:// or rediss:// URL")
        options = _read_options(parts.query)
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError("the Redis URL's port is not a number from 0 to 65535") from None
        path = unquote(parts.path) if parts.scheme == "unix" else None
        db = options.pop("db", None)
        if db is None and parts.scheme != "unix" and parts.path.strip("/"):
            try:
                db = int(unquote(parts.path).strip("/"))
            except ValueError:
                raise ValueError(f"the Redis URL's path names no database number: "
                                 f"{parts.path!r}") from None
        return cls(host=unquote(parts.hostname or "localhost"), port=port, path=path,
                   tls=parts.scheme == "rediss", db=db or 0,
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None,
                   options=options)

    def __str__(self) -> str:
        where = f"unix:{self.path}" if self.path is not None else f"{self.host}:{self.port}"
        return f"Redis at {where}"

    def open_socket(self, timeout: float | None) -> socket.socket:
        """A connected socket to the server, TLS done, each step within ``timeout`` seconds
        (None: no limit); the caller sets how long its reads may wait."""
        if self.path is not None:
            sock = platform.unix_socket()
            try:
                sock.settimeout(timeout)
                sock.connect(self.path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((self.host, self.port), timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.options.get("socket_keepalive", True):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self.tls:
            try:
                sock = self._tls_context().wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        return sock

    def _tls_context(self) -> ssl.SSLContext:
        import ssl  # only for rediss:// (a tenth of a client's imports otherwise)

        options = self.options
        reqs = options.get("ssl_cert_reqs", "required")
        context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"),
                                             capath=options.get("ssl_ca_path"))
        if reqs == "CERT_NONE":
            context.check_hostname = False
        else:
            context.check_hostname = options.get("ssl_check_hostname", True)
        context.verify_mode = getattr(ssl, reqs)
        if "ssl_certfile" in options:
            context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"),
                                    options.get("ssl_password"))
        return context


def _read_options(query: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, values in parse_qs(query).items():
        read = _OPTIONS.get(name)
        if read is None:
            raise ValueError(f"the Redis URL's option {name!r} is not one distpool reads "
                             f"(it reads: {', '.join(_OPTIONS)})")
        try:
            options[name] = read(values[-1])
        except ValueError:
            raise ValueError(f"the Redis URL's option {name}={values[-1]!r} is not "
                             f"valid") from None
    if "ssl_cert_reqs" in options:
        reqs = _CERT_REQS.get(options["ssl_cert_reqs"].lower())
        if reqs is None:
            raise ValueError(f"the Redis URL's ssl_cert_reqs is none, optional or required, "
                             f"not {options['ssl_cert_reqs']!r}")
        options["ssl_cert_reqs"] = reqs
    return options
