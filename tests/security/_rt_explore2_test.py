from typing import Any
from flask_ccsso import csrf_protect
from tests.conftest import oidc_config, start_login, callback

def test_fuzz(make_app, op):
    app = make_app(oidc_config(op))
    @app.post("/p")
    @csrf_protect
    def p(): return "ok"
    c = app.test_client()
    callback(c, op.issue_code(start_login(c)))
    hs = [{"Origin": "http://[x"}, {"Origin": "\xff"}, {"Sec-Fetch-Site": "\xff"}, {"X-CSRF-Token": "\xff"*200},
          {"Origin": "http://localhost:99999"}, {"Content-Type": "multipart/form-data; boundary=x"},
          {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "5"}]
    for h in hs:
        for path in ("/p", "/sso/logout"):
            r = c.post(path, headers=h, data=b"csrf_token=%ff%fe" if "Content-Length" not in h else b"a=b")
            print(path, h, r.status_code)
    for q in ("stepup=database-migration", "stepup=" + "x"*3000, "next=/%0d%0a", "prompt=none"):
        r = c.get("/sso/op/login?" + q)
        print(q[:30], r.status_code)
