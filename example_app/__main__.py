"""``python -m example_app``: run the portal on 127.0.0.1 with the development IdP.

This is the development-only path: it switches the development IdP on
(``CCSSO_DEVIDP_ENABLED=1``) for this process, says so loudly, and serves on a
loopback address only. ``CCSSO_EXAMPLE_IDP=okta|azure|google`` runs the same
portal against a real IdP instead (and leaves the development IdP off).
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "localhost"],
                        help="loopback host name to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    args = parser.parse_args(argv)

    os.environ.setdefault("CCSSO_EXAMPLE_BASE_URL", f"http://{args.host}:{args.port}")
    idp = os.environ.get("CCSSO_EXAMPLE_IDP", "dev") or "dev"
    if idp == "dev":
        # the development-only path; the IdP itself logs its loud warning banner
        os.environ["CCSSO_DEVIDP_ENABLED"] = "1"
        print(" * CCSSO_DEVIDP_ENABLED=1 set by python -m example_app: development only, anyone can sign in "
              "as anyone.", file=sys.stderr, flush=True)

    from . import create_app

    # the code-level switch of the development IdP (the environment variable above is the other)
    app = create_app({"CCSSO_EXAMPLE_DEVIDP": idp == "dev"})
    print(f" * Portal: {os.environ['CCSSO_EXAMPLE_BASE_URL']}/  (sign in as alice, bob, carol, dave or erin)",
          file=sys.stderr, flush=True)
    # threaded: the portal's back-channel calls (discovery, token) go to the dev IdP in this same server
    app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
