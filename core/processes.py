"""Child processes that never outlive the workbench, and never hold its port.

`datasets` prepares large files with `map(num_proc=N)`, whose worker processes are forked from the workbench.
A fork copies every open file descriptor, whatever its close-on-exec flag, so the workers held the UI's
listening socket; and when the UI was killed (kill -9, an out-of-memory kill) they lived on as orphans, hundreds
of MB each, keeping the port: the next start said the port was in use, and a browser on it hung unanswered.

`guard_children()` (called once by the CLI, before anything forks) makes every child forked by this process
  - close the descriptors registered with `close_in_children` (the listening socket) at once, and
  - ask the kernel to kill it when its parent dies (Linux `PR_SET_PDEATHSIG`), checking that the parent had
    not already died in between.
Processes started with `subprocess` (torchrun) exec a new program: close-on-exec already keeps the socket from
them, and they are stopped by their own launcher's logic.
"""

from __future__ import annotations

import os
import signal
import sys

_close: set[int] = set()
_state = {"installed": False, "parent": 0, "prctl": None}
PR_SET_PDEATHSIG = 1


def close_in_children(fd: int) -> None:
    """Close `fd` in every child this process forks from now on (a listening socket)."""
    _close.add(fd)


def guard_children() -> None:
    """Install the fork hooks (once per process)."""
    if _state["installed"] or not hasattr(os, "register_at_fork"):
        return
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            _state["prctl"] = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            _state["prctl"] = None
    os.register_at_fork(before=_before_fork, after_in_child=_in_child)
    _state["installed"] = True


def _before_fork() -> None:
    _state["parent"] = os.getpid()


def _in_child() -> None:
    for fd in list(_close):
        try:
            os.close(fd)
        except OSError:
            pass
    _close.clear()
    prctl = _state["prctl"]
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != _state["parent"]:  # the parent died before the request above took effect
            os._exit(1)


def port_holders(port: int) -> list[tuple[int, str]]:
    """(pid, command line) of each process with a socket listening on `port`, as far as /proc lets this user see
    (Linux; elsewhere, or unreadable, an empty list)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{fields[9]}]")
        except (OSError, ValueError):
            continue
    if not inodes:
        return []
    holders = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                    with open(f"/proc/{entry}/cmdline", "rb") as handle:
                        command = handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
                    holders.append((int(entry), command[:200]))
                    break
            except OSError:
                continue
    return sorted(holders)
