"""``python -m tests.support.shifted_clock <flask arguments>``: the ``flask`` command with a movable clock.

``time.time`` answers the real time plus the seconds written in the file
named by ``CCSSO_TEST_CLOCK_FILE`` (none or unreadable: no shift). It is
replaced before Flask or flask-ccsso is imported, so the extension's clock,
the development IdP's and the token libraries' all move together -- a test
makes a sign-in five minutes old by writing ``301`` instead of waiting.
"""

from __future__ import annotations

import os
import sys
import time

_real_time = time.time
_shift_file = os.environ.get("CCSSO_TEST_CLOCK_FILE", "")


def _shifted_time() -> float:
    try:
        with open(_shift_file, encoding="ascii") as f:
            return _real_time() + float(f.read() or 0)
    except (OSError, ValueError):
        return _real_time()


time.time = _shifted_time

if __name__ == "__main__":
    from flask.cli import main

    sys.argv = ["flask", *sys.argv[1:]]
    main()
