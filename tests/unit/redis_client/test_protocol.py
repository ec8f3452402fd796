"""RESP2 as distpool's own connections speak it: packing, and replies read off a socket,
whole or split anyhow, honest or not. (hiredis, which parses them, takes the two bytes after
a value for its CRLF without looking: a value followed by anything else is not refused.)"""

from __future__ import annotations

import socket
import threading

import pytest

from distpool.redis_client.protocol import (
    MAX_LINE,
    RedisConnectionError,
    ReplyError,
    ReplyReader,
    pack,
)


def reader_of(*chunks: bytes, close: bool = True) -> tuple[ReplyReader, socket.socket]:
    """A reader of a socket that receives ``chunks`` one send at a time (then EOF)."""
    ours, theirs = socket.socketpair()

    def feed() -> None:
        for chunk in chunks:
            theirs.sendall(chunk)
        if close:
            theirs.close()

    threading.Thread(target=feed, daemon=True).start()
    ours.settimeout(5)
    return ReplyReader(ours), theirs


def test_commands_are_packed_as_arrays_of_bulk_strings():
    assert pack(("SET", "k", b"\x00\r\n", 12)) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n\x00\r\n\r\n$2\r\n12\r\n")
    assert pack(("HSET", "h", "f"), more=1) == b"*4\r\n$4\r\nHSET\r\n$1\r\nh\r\n$1\r\nf\r\n"


def test_every_reply_type_reads_as_redis_sent_it_even_one_byte_at_a_time():
    wire = (b"+OK\r\n:-42\r\n$5\r\nhe\r\no\r\n$-1\r\n*-1\r\n$0\r\n\r\n"
            b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n-ERR inside\r\n$1\r\nb\r\n"
            b"-WRONGTYPE Operation against a key\r\n")
    reader, _ = reader_of(*[wire[i:i + 1] for i in range(len(wire))])
    assert reader.read() == b"OK"
    assert reader.read() == -42
    assert reader.read() == b"he\r\no"
    assert reader.read() is None
    assert reader.read() is None
    assert reader.read() == b""
    count, (a, inside), b = reader.read()
    assert (count, a, b) == (1, b"a", b"b")
    assert isinstance(inside, ReplyError) and str(inside) == "ERR inside"
    error = reader.read()
    assert isinstance(error, ReplyError) and error.code == "WRONGTYPE"


def test_a_large_value_comes_whole_after_many_small_ones():
    value = bytes(range(256)) * 4096  # 1 MiB, many reads
    small = b"".join(b"$3\r\n%03d\r\n" % i for i in range(1000))
    reader, _ = reader_of(small + b"$%d\r\n" % len(value), value[:1000], value[1000:] + b"\r\n")
    assert [reader.read() for _ in range(1000)] == [b"%03d" % i for i in range(1000)]
    assert reader.read() == value


def test_a_value_is_received_into_the_callers_memory():
    reader, _ = reader_of(b"$5\r\nhello\r\n$-1\r\n-OOM no room\r\n$3\r\nabc\r\n:1\r\n")
    memory = bytearray(8)
    assert reader.read_bulk_into(memoryview(memory)) == 5
    assert reader.read_bulk_into(memoryview(memory)[5:]) is None
    with pytest.raises(ReplyError, match="OOM"):
        reader.read_bulk_into(memoryview(memory))
    with pytest.raises(ValueError, match="a value of 3 bytes, where at most 2 fit"):
        reader.read_bulk_into(memoryview(memory)[:2])
    assert bytes(memory[:5]) == b"hello"


@pytest.mark.parametrize("wire", [
    b"%bogus\r\n",          # a RESP3 type nobody asked for, malformed
    b"%1\r\n+a\r\n+b\r\n",  # well formed: a map
    b"#t\r\n", b",1.5\r\n", b"*2\r\n:1\r\n#f\r\n",  # a boolean, a double, a boolean inside
    b"$abc\r\n",            # a length that is no number
    b"$-5\r\n",             # nor a valid one
    b"*1x\r\n",
    b":1.5\r\n",
    b"+" + b"x" * (MAX_LINE + 10),  # a line that never ends
    b"$10\r\nshort",        # closed mid-value
    b"*2\r\n:1\r\n",        # closed mid-array
    b"",                    # closed before any reply
])
def test_what_is_not_a_redis_reply_breaks_the_connection(wire):
    reader, _ = reader_of(wire)
    with pytest.raises(RedisConnectionError):
        reader.read()


def test_a_reader_of_hostile_bytes_never_waits_for_more_than_it_was_promised():
    # An announced length larger than what follows, then silence: the socket's timeout ends
    # the read (a connection's timeout), not the reader.
    reader, theirs = reader_of(b"$100\r\nabc", close=False)
    reader._sock.settimeout(0.2)
    with pytest.raises(OSError):
        reader.read()
    theirs.close()


def test_what_hiredis_does_not_pack_is_packed_alike():
    assert pack(("SET", bytearray(b"k"), True)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\nTrue\r\n"
