"""Child processes of a deployment: started in their own session with their output in a log
file, checked for health, and stopped with their whole process group.

vLLM servers fork an engine-core process; signalling the group (not just the child) is what
makes sure nothing is left running.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil


class DeploymentError(RuntimeError):
    """The deployment cannot start or stopped working; the message says what to change."""


_EXCEPTION_LINE = re.compile(r"^(?:\(.*?\) ERROR .*?\] )?([\w.]*(?:Error|Exception)): (.*)$", re.MULTILINE)


@dataclass
class Managed:
    name: str
    popen: subprocess.Popen
    log: Path
    health_url: str

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def cause(self) -> str:
        """The first exception line of the log (vLLM logs the root cause long before the tail)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        match = _EXCEPTION_LINE.search(text)
        return f"{match.group(1)}: {match.group(2)}" if match else "(no exception in the log)"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def pids(self) -> set[int]:
        """The running processes it consists of: the child, its descendants, and whatever else
        is in its process group (a vLLM server's engine core, resource tracker, ...)."""
        found = {self.popen.pid} if self.alive() else set()
        try:
            found |= {c.pid for c in psutil.Process(self.popen.pid).children(recursive=True)}
        except psutil.Error:
            pass
        for process in psutil.process_iter():
            try:
                if os.getpgid(process.pid) == self.popen.pid:
                    found.add(process.pid)
            except (ProcessLookupError, PermissionError):
                continue
        return found


def running(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie, dead but not yet reaped by its parent, is not)."""
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def start(name: str, command: list[str], env: dict[str, str], log: Path, health_url: str,
          append: bool = False) -> Managed:
    """Start `command` in its own session (a new process group) with its output in `log`
    (appended to, for a restart)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab" if append else "wb") as out:
        popen = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    return Managed(name, popen, log, health_url)


def wait_healthy(processes: list[Managed], timeout_s: float, poll_s: float = 1.0) -> None:
    """Return when every process answers its health URL; raise DeploymentError with the log tail
    as soon as one exits, or naming the laggards after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    waiting = list(processes)
    while waiting:
        for process in list(waiting):
            if not process.alive():
                raise DeploymentError(
                    f"{process.name} exited with code {process.popen.returncode} while starting: {process.cause()}\n"
                    f"last lines of {process.log}:\n{process.tail()}")
            if process.healthy():
                waiting.remove(process)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(p.name for p in waiting)
            raise DeploymentError(
                f"{names} not healthy after {timeout_s:g} s; raise real.timeouts.startup_s if the machine is slow, "
                f"else see the log. Last lines of {waiting[0].log}:\n{waiting[0].tail()}")
        if waiting:
            time.sleep(poll_s)


def stop_all(processes: list[Managed], grace_s: float) -> None:
    """SIGTERM every process group, wait up to `grace_s`, then SIGKILL what is left, members
    that left the group included."""
    members = _members(processes)
    for process in processes:
        process.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    _kill(processes, members)


def kill_all(processes: list[Managed]) -> None:
    """SIGKILL every process group at once, as a crash would, and return once all its members
    are gone (those that left the group included)."""
    _kill(processes, _members(processes))


def _members(processes: list[Managed]) -> set[int]:
    return set().union(*(process.pids() for process in processes)) if processes else set()


def _kill(processes: list[Managed], members: set[int]) -> None:
    for process in processes:
        process.signal_group(signal.SIGKILL)   # children of an exited leader may remain
        if process.alive():
            process.popen.wait()
    for pid in running(members):
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    # a killed process is gone once the kernel has torn it down (seconds for a server holding GBs)
    deadline = time.monotonic() + 10.0
    while running(members) and time.monotonic() < deadline:
        time.sleep(0.02)
