"""Hosts on one machine: Linux network namespaces on a bridge, each with its own hostname and
its own view of the filesystem.

Each :class:`Host` is a network namespace with one interface on a bridge that lives in a
namespace of its own (the *switch*), and an address of the 198.18.0.0/15 block, which is
set aside for tests of networks: nothing of it leaves the machine, and the namespaces have
no route to anywhere else. Each process a host runs (:meth:`Host.popen`) gets the host's
hostname (a UTS namespace) and a mount namespace in which ``/tmp`` is an empty file system
of its own: the client's project and temporary files are not there. The repository and the
Python running the tests stay visible, because workers need distpool installed; so does
``/tmp/host``, the test's own directory for that host (``Host.files``), through which the
test gives a host files and reads what it writes.

Cutting a host's cable (:meth:`Host.cut`) takes its port on the switch down: a partition.
Killing a host (:meth:`Host.kill`) kills every process in its namespace at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.support import REPO_ROOT, STOP_TIMEOUT

#: What a host's processes start with: its hostname, an empty /tmp, and back in it the
#: directories that must stay (kept open as descriptors 3, 4, ... meanwhile), then the
#: test's directory for the host. Arguments: hostname, the host's directory, whether to hide
#: /tmp, then the directories to keep, then "--" and the command.
SETUP = r"""
set -e
hostname "$1"; files=$2; hide=$3; shift 3
keep=""; fd=3
while [ "$1" != "--" ]; do eval "exec $fd<\"\$1\""; keep="$keep $fd:$1"; fd=$((fd+1)); shift; done
shift
if [ "$hide" = 1 ]; then
    exec 9<"$files"
    mount -t tmpfs -o mode=1777 tmpfs /tmp
    for entry in $keep; do
        fd=${entry%%:*}; path=${entry#*:}
        case "$path" in
            /tmp|/tmp/*) mkdir -p "$path"; mount --bind -c "/proc/self/fd/$fd" "$path";;
        esac
    done
    mkdir -p /tmp/host; mount --bind -c /proc/self/fd/9 /tmp/host
    exec 9<&-
fi
for entry in $keep; do eval "exec ${entry%%:*}<&-"; done
exec "$@"
"""


def unavailable() -> str | None:
    """Why hosts cannot be made here, or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "making network namespaces takes root"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"no {tool} command"
    probe = f"dp-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*arguments: str, netns: str | None = None) -> None:
    command = ["ip", *(["-n", netns] if netns else []), *arguments]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {completed.stderr.strip()}")


class Network:
    """A bridge, and the hosts on it; :meth:`remove` takes everything down."""

    def __init__(self, directory: Path) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.directory = directory
        self.hosts: list[Host] = []
        self.switch = f"dp{self.tag}-switch"
        # 198.18.0.0/15 (RFC 2544): addresses for testing networks, never routed.
        self.subnet = f"198.18.{int(self.tag[:2], 16)}"
        ip("netns", "add", self.switch)
        ip("link", "add", "br0", "type", "bridge", netns=self.switch)
        ip("link", "set", "br0", "up", netns=self.switch)

    def add_host(self, name: str, hide_tmp: bool = True) -> Host:
        host = Host(self, name, f"{self.subnet}.{len(self.hosts) + 1}", hide_tmp)
        self.hosts.append(host)
        return host

    def remove(self) -> None:
        for host in self.hosts:
            host.kill()
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.switch], capture_output=True)


class Host:
    """One host: its namespace, its address, and the processes it runs."""

    def __init__(self, network: Network, name: str, address: str, hide_tmp: bool) -> None:
        self.name = name
        self.address = address
        self.netns = f"dp{network.tag}-{name}"
        self.port = f"p{network.tag}{name}"[:15]  # its end on the switch
        self.files = network.directory / name
        self.files.mkdir(parents=True, exist_ok=True)
        self._switch = network.switch
        self._hide_tmp = hide_tmp
        self._processes: list[subprocess.Popen] = []
        ip("netns", "add", self.netns)
        ip("link", "add", "eth0", "netns", self.netns, "type", "veth", "peer", "name",
           self.port, "netns", self._switch)
        ip("link", "set", self.port, "master", "br0", "up", netns=self._switch)
        ip("addr", "add", f"{address}/24", "dev", "eth0", netns=self.netns)
        ip("link", "set", "eth0", "up", netns=self.netns)
        ip("link", "set", "lo", "up", netns=self.netns)

    def popen(self, command: list[str], *, env: dict[str, str], log: Path | None = None,
              cwd: str = "/", **kwargs: object) -> subprocess.Popen:
        """Start ``command`` on this host (output to ``log``, unless ``kwargs`` say where)."""
        keep = sorted({str(REPO_ROOT), sys.prefix, sys.base_prefix,
                       os.path.dirname(os.path.realpath(sys.executable))})
        wrapped = ["ip", "netns", "exec", self.netns, "unshare", "--uts", "--mount",
                   "--propagation", "private", "--", "sh", "-c", SETUP, "sh", self.name,
                   str(self.files), "1" if self._hide_tmp else "0", *keep, "--", *command]
        if log is not None:
            with open(log, "ab") as output:
                process = subprocess.Popen(wrapped, env=env, cwd=cwd, stdout=output,
                                           stderr=subprocess.STDOUT, **kwargs)  # type: ignore[call-overload]
        else:
            process = subprocess.Popen(wrapped, env=env, cwd=cwd, **kwargs)  # type: ignore[call-overload]
        self._processes.append(process)
        return process

    def run(self, command: list[str], *, env: dict[str, str], timeout: float = 60,
            cwd: str = "/") -> subprocess.CompletedProcess:
        """Run ``command`` on this host to its end; its output, as text."""
        process = self.popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def pids(self) -> list[int]:
        listed = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True,
                                text=True).stdout
        return [int(pid) for pid in listed.split()]

    def kill(self) -> None:
        """Kill every process on the host at once, as a power cut does."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        for process in self._processes:
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass

    def cut(self) -> None:
        """Unplug the host: nothing reaches it, nothing leaves it."""
        ip("link", "set", self.port, "down", netns=self._switch)

    def mend(self) -> None:
        ip("link", "set", self.port, "up", netns=self._switch)
