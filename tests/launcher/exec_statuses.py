"""Print, as JSON, the status of ``run_exec`` for ``sh -c 'exit N'`` with N from 0 to 255.

It imports the launcher once and forks for each code, because 256 interpreter starts
would take most of a minute on a small machine. Each fork runs the real exec-mode loop
with real child processes and signals.
"""

from __future__ import annotations

import json
import os

from mlmiddleware.launcher.exec_mode import run_exec


def main() -> None:
    statuses: dict[int, int] = {}
    for code in range(256):
        pid = os.fork()
        if pid == 0:
            os._exit(run_exec(["sh", "-c", f"exit {code}"], graceful_timeout=10.0, group=False))
        _, wait_status = os.waitpid(pid, 0)
        statuses[code] = os.waitstatus_to_exitcode(wait_status)
    print(json.dumps(statuses))


if __name__ == "__main__":
    main()
