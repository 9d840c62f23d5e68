"""What one SAML sign-in (the ACS POST) costs, per signature verifier, beside pysaml2's own path.

    python benchmarks/bench_saml.py [--quick]      (or: python benchmarks/run.py --only saml)
    python benchmarks/bench_saml.py --profile [binding|xmlsec1] [--calls 20]   (pyinstrument)

The IdP is the project's test IdP (``tests/support/saml_idp.py``: pysaml2's
``saml2.server.Server``, real RSA-SHA256 signatures made by xmlsec1). Every
timed ACS call posts a *fresh* response -- one signed assertion, as Google
Workspace sends -- answering a sign-in started through the same app (a response
is accepted once), through ``app.wsgi_app`` with a prebuilt environ; the
responses are made before timing starts. Contenders, interleaved in one run:

* ``ACS binding``: ``xmlsecBackend: binding`` (the default when the ``xmlsec``
  binding loads): the signature verified in-process;
* ``ACS xmlsec1``: ``xmlsecBackend: xmlsec1``, the hardened subprocess as it
  runs now (no trust store loaded);
* ``ACS xmlsec1, trust store loaded``: the same app with the subprocess
  environment of 0.1 (OpenSSL reads the system CA bundle at start-up);
* ``pysaml2 default``: ``Saml2Client.parse_authn_request_response`` on the same
  kind of response -- pysaml2's own verification (its xmlsec1 runs, with the
  default environment), configured as the provider configures it, without the
  provider's checks;
* verification alone, on one response: the binding, and one xmlsec1 run with
  and without the trust store.

The sign-in's session goes to the real Redis at 127.0.0.1:6379 (the embedded
SQLite file when Redis is not there: its commit then dominates); the shared
state (pending sign-ins, seen assertion IDs) is the in-memory store; the
default audit pipeline is on, its log to a null handler.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h

ACS_PATH = "/sso/google/acs"
#: the environment of the xmlsec1 runs before the trust-store fix (0.1)
_DEAD_PROXY = "http://127.0.0.1:1/"
OLD_ENV = {"PATH": os.defpath, "LC_ALL": "C", "http_proxy": _DEAD_PROXY, "HTTP_PROXY": _DEAD_PROXY,
           "ftp_proxy": _DEAD_PROXY, "FTP_PROXY": _DEAD_PROXY, "no_proxy": "", "NO_PROXY": ""}


class Portal:
    """One app with one SAML provider ``google`` trusting ``idp``."""

    def __init__(self, idp: Any, meta: str, workdir: str, prefix: str | None, **over: Any) -> None:
        from flask import Flask

        from flask_ccsso import CCSSO
        from flask_ccsso.stores import MemoryStore
        from tests.support.saml import SKILLS, provider_block

        self.idp = idp
        self.app = Flask(f"saml_{over.get('xmlsecBackend', 'auto')}", instance_path=os.path.join(workdir, "inst"))
        session: dict[str, Any] = {"cookieSecure": False}
        if prefix is not None:  # sessions on the real Redis, as in production (else the embedded SQLite file)
            session["store"] = {"type": "redis", "url": h.REDIS_URL, "keyPrefix": prefix}
        self.app.config.update(SECRET_KEY="x" * 32, CCSSO={
            "auth": {"providers": {"google": provider_block(meta, **over)}}, "skills": SKILLS, "session": session})
        CCSSO(self.app, store=MemoryStore())
        self.provider = self.app.extensions["ccsso"].providers["google"]
        sp_meta = h.wsgi_response(self.app, h.environ("/sso/google/metadata")).body.decode()
        idp.trust_sp(sp_meta)

    def fresh(self) -> tuple[dict[str, Any], Any, dict[str, str]]:
        """A signed response to a sign-in started here: (ACS POST environ, AuthnRequest, form)."""
        resp = h.wsgi_response(self.app, h.environ("/sso/google/login", query_string={"next": "/me"}))
        assert resp.code == 302, resp.status
        location = resp.header("Location") or ""
        request, _relay = self.idp.parse_login(location)
        form = self.idp.respond(location)
        env = h.environ(ACS_PATH, method="POST", data=form)
        return env, request, form


class CPU:
    """CPU seconds per call of a contender: the calling thread's (``time.thread_time``)
    plus every child process it waited for (``RUSAGE_CHILDREN``: the xmlsec1 runs).
    On a shared, loaded machine the wall clock counts the time spent waiting for a
    core; this does not."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {}

    def wrap(self, name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        got = self.calls.setdefault(name, [])

        def call() -> Any:
            r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.thread_time()
            out = fn()
            t1, r1 = time.thread_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
            got.append(t1 - t0 + (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
            return out

        return call

    def median_ms(self, name: str, skip: int) -> float | None:
        values = sorted(self.calls.get(name, [])[skip:])
        return values[len(values) // 2] * 1000 if values else None


def _pool(make: Callable[[], Any], n: int) -> Iterator[Any]:
    items = [make() for _ in range(n)]
    yield from items
    raise RuntimeError("the pool of fresh responses ran out: raise its size")


def _acs(portal: Portal, pool: Iterator[Any]) -> Callable[[], str]:
    def call() -> str:
        env = next(pool)[0]
        status = h.wsgi_call(portal.app, env)
        if not status.startswith("303"):
            raise AssertionError(f"the ACS answered {status}")
        return status

    return call


def _with_env(fn: Callable[[], str], env: dict[str, str]) -> Callable[[], str]:
    from flask_ccsso.providers import saml_xmlsec

    def call() -> str:
        now = saml_xmlsec._ENV
        saml_xmlsec._ENV = env
        try:
            return fn()
        finally:
            saml_xmlsec._ENV = now

    return call


def _pysaml2(portal: Portal, pool: Iterator[Any]) -> Callable[[], Any]:
    """pysaml2's own default path: a Saml2Client as the provider configures it
    (unpatched: its xmlsec1 runs with pysaml2's defaults), verifying and
    parsing the response to a request it knows as outstanding."""
    from saml2 import BINDING_HTTP_POST
    from saml2.client import Saml2Client

    acs = "http://localhost" + ACS_PATH
    with portal.app.app_context():
        client = Saml2Client(config=portal.provider._sp_config(acs, None, portal.provider.idp()))

    def call() -> Any:
        _env, request, form = next(pool)
        got = client.parse_authn_request_response(form["SAMLResponse"], BINDING_HTTP_POST,
                                                  outstanding={request.id: acs})
        if got is None or got.assertion is None:
            raise AssertionError("pysaml2 refused the response")
        return got

    return call


def run(quick: bool) -> dict[str, Any]:
    from flask_ccsso.providers import saml_binding
    from tests.support.saml_idp import SAMLIdP

    h.quiet_logs()
    workdir = tempfile.mkdtemp(prefix="ccsso-bench-saml-")
    idp = SAMLIdP(os.path.join(workdir, "idp"))
    meta = idp.write_metadata(os.path.join(workdir, "idp-metadata.xml"))
    missing = saml_binding.available()
    prefix = None if h.redis_unavailable() else f"ccsso-bench-saml-{uuid.uuid4().hex[:8]}:"
    try:
        return _run(quick, idp, meta, workdir, prefix, missing)
    finally:
        if prefix is not None:
            h.delete_redis_keys(prefix)


def _run(quick: bool, idp: Any, meta: str, workdir: str, prefix: str | None, missing: str | None) -> dict[str, Any]:
    from flask_ccsso.providers import saml_binding, saml_xmlsec
    from tests.support.saml_idp import decode_form

    rounds, warm = (2, 1) if quick else (15, 2)
    rows: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    sub = Portal(idp, meta, workdir, prefix, xmlsecBackend="xmlsec1")
    per = rounds + warm
    contenders: dict[str, Callable[[], object]] = {}
    if missing is None:
        fast = Portal(idp, meta, workdir, prefix, xmlsecBackend="binding")
        contenders["ACS binding"] = _acs(fast, _pool(fast.fresh, per))
    contenders["ACS xmlsec1"] = _acs(sub, _pool(sub.fresh, per))
    contenders["ACS xmlsec1, trust store loaded"] = _with_env(_acs(sub, _pool(sub.fresh, per)), OLD_ENV)
    contenders["pysaml2 default"] = _pysaml2(sub, _pool(sub.fresh, per))
    cpu = CPU()
    acs = h.interleave({name: cpu.wrap(name, fn) for name, fn in contenders.items()}, batch=1, rounds=rounds,
                       warmup=warm)

    # verification alone, on one response (repeatable: no fresh response needed)
    _env, _req, form = sub.fresh()
    doc = decode_form(form).encode()
    with sub.app.app_context():
        certs = list(sub.provider.idp().signing_certs)
    runner = sub.provider.xmlsec_runner
    verify: dict[str, Callable[[], object]] = {}
    if missing is None:
        binding = saml_binding.BindingVerifier()
        verify["verify binding"] = lambda: binding.verify(doc, saml_xmlsec.ASSERTION_SIGNATURE, certs)
    verify["verify xmlsec1"] = lambda: runner.verify(doc, saml_xmlsec.ASSERTION_SIGNATURE, certs)
    verify["verify xmlsec1, trust store loaded"] = _with_env(
        lambda: runner.verify(doc, saml_xmlsec.ASSERTION_SIGNATURE, certs), OLD_ENV)  # type: ignore[arg-type, return-value]
    for name, fn in verify.items():
        assert fn() is True, name
    ver = h.interleave(verify, batch=1 if quick else 5, rounds=2 if quick else 15, warmup=1 if quick else 3)

    base = acs["pysaml2 default"]
    cpu_ms = {name: cpu.median_ms(name, warm) for name in acs}
    for name, st in acs.items():
        c = cpu_ms[name]
        rows.append(h.row(name, st, ratios={"pysaml2": h.ratio(st, base)},
                          extra={"ms": round(st.median_us / 1000, 2), "cpu_ms": None if c is None else round(c, 2),
                                 "cpu_x_pysaml2": None if c is None or not cpu_ms["pysaml2 default"]
                                 else round(c / cpu_ms["pysaml2 default"], 3)}))
    if missing is not None:
        rows.append(h.skipped("ACS binding", missing))
    vbase = ver["verify xmlsec1, trust store loaded"]
    for name, st in ver.items():
        rows.append(h.row(name, st, ratios={"xmlsec1_trust_store": h.ratio(st, vbase)},
                          extra={"ms": round(st.median_us / 1000, 3)}))

    best_key = "ACS binding" if "ACS binding" in acs else "ACS xmlsec1"
    best = acs[best_key]
    best_name = "binding" if best_key == "ACS binding" else "xmlsec1 (binding missing)"
    load = h.machine().get("loadavg")
    targets.append(h.target("SAML ACS, signed response (CPU ms: thread + xmlsec1 children)", cpu_ms[best_key], 10.0,
                            f"default verifier: {best_name}; wall median {best.median_us / 1000:.1f} ms "
                            f"at load average {load}"))
    speedup = base.median_us / best.median_us if best.median_us else None
    targets.append(h.target("SAML ACS speed-up over pysaml2's default path (x)", speedup, 3.0,
                            f"pysaml2 {base.median_us / 1000:.1f} ms vs {best_name} {best.median_us / 1000:.1f} ms",
                            at_least=True))
    after, before = ver["verify xmlsec1"], vbase
    targets.append(h.target("xmlsec1 run without the trust store / with it (x)", h.ratio(after, before), 1.0,
                            "a tampered response is still refused (tests/providers/test_xmlsec_backend.py, "
                            "the SAML suite on both verifiers)"))
    return {"name": "saml", "rows": rows, "targets": targets,
            "note": "ACS: one fresh signed response per call, through app.wsgi_app, sessions on "
                    f"{'Redis' if prefix else 'the embedded SQLite file'}; ratios against pysaml2's own "
                    "default path in the same run."}


def profile(backend: str, calls: int) -> None:
    """``--profile [binding|xmlsec1] [--calls N]``: pyinstrument over N ACS posts (fresh responses)."""
    from pyinstrument import Profiler

    from tests.support.saml_idp import SAMLIdP

    h.quiet_logs()
    workdir = tempfile.mkdtemp(prefix="ccsso-bench-saml-")
    idp = SAMLIdP(os.path.join(workdir, "idp"))
    meta = idp.write_metadata(os.path.join(workdir, "idp-metadata.xml"))
    prefix = None if h.redis_unavailable() else f"ccsso-bench-saml-{uuid.uuid4().hex[:8]}:"
    try:
        portal = Portal(idp, meta, workdir, prefix, xmlsecBackend=backend)
        envs = [portal.fresh()[0] for _ in range(calls + 2)]
        for env in envs[:2]:
            h.wsgi_call(portal.app, env)
        prof = Profiler(interval=0.0005)
        prof.start()
        for env in envs[2:]:
            h.wsgi_call(portal.app, env)
        prof.stop()
        print(prof.output_text(unicode=True, color=False))
    finally:
        if prefix is not None:
            h.delete_redis_keys(prefix)


if __name__ == "__main__":
    if "--profile" in sys.argv:
        args = sys.argv[sys.argv.index("--profile") + 1:]
        profile(args[0] if args and not args[0].startswith("-") else "binding",
                int(args[args.index("--calls") + 1]) if "--calls" in args else 20)
    else:
        h.standalone(run)
