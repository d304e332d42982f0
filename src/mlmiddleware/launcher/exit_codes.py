"""Exit statuses of the launcher, shared by run and exec mode."""

from __future__ import annotations

import os

__all__ = [
    "EXIT_CRASH_LOOP",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_WORKERS_KILLED",
    "exit_code_of",
]

EXIT_OK = 0
# Bind failure, missing git or another runtime error of the launcher itself.
EXIT_FAILURE = 1
# Invalid command line, environment variable or config file (argparse uses 2 as well).
EXIT_USAGE = 2
# Run mode: workers failed during startup 5 times inside the crash-loop window
# (EX_SOFTWARE in sysexits.h).
EXIT_CRASH_LOOP = 70
# Run mode: workers were still running at the end of the graceful timeout and got SIGKILL
# (the status GNU timeout uses when its command timed out).
EXIT_WORKERS_KILLED = 124


def exit_code_of(wait_status: int) -> int:
    """Convert a ``waitpid`` status to a shell-style code: the exit code, or 128+N for signal N."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    # Stopped or continued children are not reaped, so this is not reached in practice.
    return EXIT_FAILURE
