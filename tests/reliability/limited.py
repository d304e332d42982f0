"""Run a command with a file-size limit, as on a full disk: ``python -m ... BYTES CMD...``.

``RLIMIT_FSIZE`` makes a write past ``BYTES`` fail with ``EFBIG`` instead of filling the
real disk. SIGXFSZ, which the kernel also sends, is ignored, so the write returns the error
instead of killing the process. Both settings survive ``exec`` and are inherited by the
launcher's workers. Pipes and sockets are not limited, so logging and serving go on.
"""

from __future__ import annotations

import os
import resource
import signal
import sys


def main() -> None:
    limit = int(sys.argv[1])
    command = sys.argv[2:]
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
