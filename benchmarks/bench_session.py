"""What reading a session costs: sign-in state on every page, the sliding write, API tokens.

    python benchmarks/bench_session.py [--quick]      (or: python benchmarks/run.py --only session)

Contenders (same process, same run, interleaved; raw ``app.wsgi_app`` calls as in
``bench_request.py``, the same apps from ``_contenders.py``), every view reading the
signed-in user, audit off:

* ``bare Flask``, ``Flask-Login`` (cookie session) and ``Flask-Session Redis``
  without and with its default ``SESSION_REFRESH_EACH_REQUEST`` (a Redis write
  on every request);
* flask-ccsso ``@login_required`` (no skill policy) on the embedded and the
  Redis store -- the steady state: one read, no write;
* flask-ccsso ``@login_required``, Redis, ``slidingWriteInterval: 0``: the
  activity stamp written on every request (a read and a write), the cost of
  exact idle deadlines;
* an API call, ``Authorization: Bearer <RS256 access token>`` on
  ``@requires_skill``: with the verified-token cache hit (the normal case) and
  with the cache emptied before each call (a full signature verification).
  The JWKS was fetched during warm-up; the provider is then shut down.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _contenders as c
import _harness as h


def run(quick: bool) -> dict[str, Any]:
    h.quiet_logs()
    h.COUNTER.install()
    batch, rounds, io_calls = (20, 2, 10) if quick else (600, 11, 200)
    tmp = tempfile.mkdtemp(prefix="ccsso-bench-session-")
    prefix = f"benchsess{uuid.uuid4().hex[:8]}:"
    portals = c.Portals(tmp, prefix)
    contenders: dict[str, Any] = {}
    labels: dict[str, str] = {}
    skipped: dict[str, str] = {}
    no_redis = h.redis_unavailable()
    no_fs = h.missing("flask_session", "flask-session") or no_redis
    redis_store = {"type": "redis", "url": h.REDIS_URL, "keyPrefix": prefix}
    rows: list[dict[str, Any]] = []
    try:
        labels["bare_flask"] = "bare Flask"
        contenders["bare_flask"] = h.caller(*c.bare_app())
        labels["flask_login"] = "Flask-Login @login_required"
        why = h.missing("flask_login", "flask-login")
        if why:
            skipped["flask_login"] = why
        else:
            contenders["flask_login"] = h.caller(*c.flask_login_app())
        labels["flask_session_redis"] = "Flask-Session Redis, no refresh write"
        labels["flask_session_refresh"] = "Flask-Session Redis, default (write each request)"
        if no_fs:
            skipped["flask_session_redis"] = skipped["flask_session_refresh"] = no_fs
        else:
            contenders["flask_session_redis"] = h.caller(*c.flask_session_app(prefix))
            contenders["flask_session_refresh"] = h.caller(*c.flask_session_app(prefix, refresh=True))

        portals.start()
        plan = {
            "ccsso_embedded": ("ccsso @login_required, embedded", None),
            "ccsso_redis": ("ccsso @login_required, Redis", redis_store),
            "ccsso_redis_write": ("ccsso @login_required, Redis, slidingWriteInterval 0", redis_store),
        }
        built: dict[str, tuple[Any, dict[str, Any]]] = {}
        for key, (label, store) in plan.items():
            labels[key] = label
            if store is not None and no_redis:
                skipped[key] = no_redis
                continue
            over = {"slidingWriteInterval": 0} if key == "ccsso_redis_write" else None
            app = portals.app(key, store, "off", session=over)
            built[key] = (app, portals.sign_in(app, "/me"))

        # the API contenders: one app, a real RS256 access token, the JWKS cached by a first call
        from tests.support.skills import access_token

        labels["bearer_hit"] = "API: bearer token @requires_skill, verified-token cache hit"
        labels["bearer_miss"] = "API: bearer token @requires_skill, cache emptied (RS256 verify)"

        class _Clock:
            now = time.time()

        api = portals.app("api", None, "off")
        token = access_token(portals.op, _Clock, scope="migration:write", groups=["database-admins"])
        api_env = h.environ("/migrations", {"Authorization": f"Bearer {token}", "Accept": "application/json"})
        assert h.wsgi_response(api, api_env).code == 200
        portals.stop_provider()

        for key, (app, env) in built.items():
            contenders[key] = h.caller(app, env)
        contenders["bearer_hit"] = h.caller(api, api_env)
        call_api = h.caller(api, api_env)
        cache = api.extensions["ccsso"].bearer_authenticator.cache

        def bearer_miss() -> str:
            cache.clear()
            return call_api()

        contenders["bearer_miss"] = bearer_miss

        io = {k: h.COUNTER.per_call(fn, io_calls) for k, fn in contenders.items()}
        h.COUNTER.uninstall()  # the timed runs carry no counting patch or listener
        stats = h.interleave(contenders, batch=batch, rounds=rounds)
        base = {k: stats.get(k) for k in c.BASELINES}
        for key, label in labels.items():
            if key in skipped:
                rows.append(h.skipped(label, skipped[key]))
                continue
            s = stats[key]
            i = io[key]
            extra: dict[str, Any] = {"p50_us": round(s.p50_us, 1), "cpu_us": round(s.cpu_us, 1),
                                     "store_rt": i["store_rt"], "store_writes": i["store_writes"], "net": i["net"]}
            rows.append(h.row(label, s, ratios=c.ratios_of(s, base), extra=extra))
    finally:
        portals.close()
        if not no_redis:
            h.delete_redis_keys(prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    targets = [h.target("ccsso @login_required, Redis <= 1.00x Flask-Session-Redis (no refresh)",
                        h.ratio(stats.get("ccsso_redis"), stats.get("flask_session_redis")), 1.0,
                        skipped.get("flask_session_redis", "") or "the same one GET; audit off")]
    return {"name": "session", "rows": rows, "targets": targets,
            "note": f"{batch} calls x {rounds} interleaved rounds per contender; audit off; wall-clock medians."}


if __name__ == "__main__":
    h.standalone(run)
