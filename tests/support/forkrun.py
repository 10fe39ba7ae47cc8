"""Run many ``torchwheel`` command lines cheaply, each in its own forked process, measured.

``python -m tests.support.forkrun`` reads a JSON list of argument lists on stdin, imports the
CLI once, then forks one child per command line: the child runs ``torchwheel.cli.main(argv)``
with its stdout and stderr sent to files and exits with its status; the parent reaps it with
``wait4``, which gives that child's own peak RSS, and times it. Prints a JSON list of
``{"code", "stdout", "stderr", "seconds", "max_rss_mb"}`` (``code`` -9 for a child killed after
the timeout). The children start from an interpreter that has imported torchwheel already,
so each costs what the command itself costs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from typing import Any

TIMEOUT = 60.0


def _child(argv: list[str], out: int, err: int) -> None:
    from torchwheel.cli import main

    os.dup2(out, 1)
    os.dup2(err, 2)
    try:
        code = main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # a crash outside main's guard is still a result, not a hang
        code = 99
    os._exit(code)


def run_one(argv: list[str], timeout: float = TIMEOUT) -> dict[str, Any]:
    """Fork, run ``argv``, reap: the result record (see the module docstring)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            _child(argv, out.fileno(), err.fileno())
        code = -9
        usage = None
        while True:
            wpid, status, usage = os.wait4(pid, os.WNOHANG)
            if wpid == pid:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() - start > timeout:
                os.kill(pid, signal.SIGKILL)
                _pid, _status, usage = os.wait4(pid, 0)
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return {
            "code": code,
            "stdout": out.read().decode("utf-8", "replace"),
            "stderr": err.read().decode("utf-8", "replace"),
            "seconds": seconds,
            "max_rss_mb": usage.ru_maxrss / 1024 if usage is not None else 0.0,
        }


def main() -> None:
    """Read the argument lists on stdin; print the results."""
    import torchwheel.checks
    import torchwheel.cli
    import torchwheel.commands.check  # noqa: F401

    argvs = json.loads(sys.stdin.read())
    results = [run_one(list(a)) for a in argvs]
    sys.stdout.write(json.dumps(results))


if __name__ == "__main__":
    main()
