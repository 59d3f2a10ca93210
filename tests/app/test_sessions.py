"""Sessions that end and tokens judged alone, against a real `monoscope serve` on SQLite and PostgreSQL.

Signing out ends the session on the server, so a copy of the cookie made before stops working; "sign out
everywhere" (the form, or DELETE /api/v1/me/sessions) ends every session of the user; a request with any Bearer-ish
Authorization header skips the CSRF check and is judged by its token alone, never by the cookie it carries.
"""

from __future__ import annotations

import re
from contextlib import closing

import httpx
from webapp_fixtures import SAE_NAME

LABELS = f"/api/v1/bases/{SAE_NAME}/units/{{index}}/labels"


def _csrf(client: httpx.Client, path: str = "/login") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return re.search(r'name="csrftoken" value="([^"]+)"', page.text).group(1)


def signed_in(ws, name: str) -> httpx.Client:
    """A cookie-keeping client signed in as `name` through the login form."""
    client = ws.site.client()
    signed = client.post("/login", data={"token": ws.tokens[name], "csrftoken": _csrf(client)})
    assert signed.status_code == 303, signed.text
    assert client.get("/api/v1/me").json() == {"name": name}
    return client


def copied(client: httpx.Client, ws) -> httpx.Client:
    """Another client holding a copy of `client`'s cookies (what someone who copied them would send)."""
    thief = ws.site.client()
    thief.cookies.update(dict(client.cookies))
    return thief


def label_with_cookie(client: httpx.Client, index: int, text: str) -> httpx.Response:
    """A cookie-authenticated JSON write with the CSRF header (what the page's htmx sends)."""
    return client.post(LABELS.format(index=index), json={"text": text},
                       headers={"x-csrftoken": client.cookies["monoscope_csrf"]})


def history(ws, index: int) -> list[str]:
    return [h["text"] for h in ws.site.get(LABELS.format(index=index)).json()["history"]]


def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(writable_site):
    ws = writable_site
    with closing(signed_in(ws, "alice")) as browser, copied(browser, ws) as thief:
        assert label_with_cookie(thief, 70, "copied cookie, still signed in").status_code == 201
        out = browser.post("/logout", data={"csrftoken": _csrf(browser)})
        assert out.status_code == 303
        assert thief.get("/api/v1/me").status_code == 401  # the copy died with the session
        refused = label_with_cookie(thief, 70, "after sign-out")
        assert refused.status_code == 401 and "sign in" in refused.json()["detail"]
        assert "Sign in" in thief.get("/login").text
    assert history(ws, 70) == ["copied cookie, still signed in"]


def test_sign_out_everywhere_from_the_page_and_from_the_api(writable_site):
    ws = writable_site
    one, two, other = signed_in(ws, "bob"), signed_in(ws, "bob"), signed_in(ws, "alice")
    with closing(one), closing(two), closing(other):
        page = one.get("/login").text
        assert 'id="logout-everywhere"' in page and "Sign out everywhere" in page
        assert one.post("/logout", data={"csrftoken": _csrf(one), "everywhere": "true"}).status_code == 303
        assert one.get("/api/v1/me").status_code == 401 and two.get("/api/v1/me").status_code == 401
        assert other.get("/api/v1/me").json() == {"name": "alice"}  # another user's session is untouched
        assert ws.site.get("/api/v1/me", headers=ws.auth("bob")).status_code == 200  # the token itself stays valid

        three, four = signed_in(ws, "bob"), signed_in(ws, "bob")
        with closing(three), closing(four):
            ended = ws.site.client().delete("/api/v1/me/sessions", headers=ws.auth("bob"))
            assert ended.status_code == 200 and ended.json() == {"ended": 2}
            assert three.get("/api/v1/me").status_code == 401 and four.get("/api/v1/me").status_code == 401
        # from the browser (its own cookie and the CSRF header): its own session ends too
        with closing(signed_in(ws, "bob")) as five:
            forged = five.delete("/api/v1/me/sessions")  # no CSRF token: a cross-site page cannot do this
            assert forged.status_code == 403 and five.get("/api/v1/me").status_code == 200
            mine = five.delete("/api/v1/me/sessions", headers={"x-csrftoken": five.cookies["monoscope_csrf"]})
            assert mine.status_code == 200 and mine.json() == {"ended": 1}
            assert five.get("/api/v1/me").status_code == 401
    assert httpx.delete(ws.site.url + "/api/v1/me/sessions", timeout=30).status_code == 401  # nobody to sign out


def test_a_session_of_a_revoked_user_ends(writable_site):
    import subprocess
    import sys
    from pathlib import Path

    from webapp_fixtures import add_user

    ws = writable_site
    ws.tokens["dave"] = add_user(ws.site.db_url, "dave")
    with closing(signed_in(ws, "dave")) as browser:
        exe = Path(sys.executable).with_name("monoscope")
        done = subprocess.run([str(exe), "user", "revoke", "dave", "--db", ws.site.db_url], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert browser.get("/api/v1/me").status_code == 401


MALFORMED_BEARER = [
    b"Bearer\xa0",  # a non-breaking space: asgi-csrf saw no "Bearer ", FastAPI's parser stripped it to nothing
    b"Bearer \xa0",
    b"Bearer\xa0mst_x",
    b"bearer",
    b"Bearer",
    b"BEARER\tx",
    b"Bearer x y",
    b"Bearermst_x",
]


def test_a_bearer_header_of_any_shape_never_uses_the_cookie(writable_site):
    ws = writable_site
    with closing(signed_in(ws, "alice")) as browser:
        for header in MALFORMED_BEARER:
            r = browser.post(LABELS.format(index=71), json={"text": f"forged with {header!r}"},
                             headers={"Authorization": header})
            assert r.status_code == 401, (header, r.status_code, r.text)
            assert r.headers["www-authenticate"] == "Bearer", header
        # Two Authorization headers: the CSRF check and the user lookup must not read different ones.
        for pair in ([b"Basic YWxpY2U6eA==", b"Bearer x"], [b"Bearer x", b"Basic YWxpY2U6eA=="]):
            r = browser.post(LABELS.format(index=71), json={"text": "forged, two headers"},
                             headers=[("Authorization", value) for value in pair])
            assert r.status_code == 401, (pair, r.text)
        # A proxy's Basic header is no Bearer: the cookie decides, and then the CSRF check applies.
        basic = browser.post(LABELS.format(index=71), json={"text": "basic without csrf"},
                             headers={"Authorization": "Basic YWxpY2U6eA=="})
        assert basic.status_code == 403
        # The well-formed token still works beside the cookie, judged alone (bob's token, alice's cookie).
        r = browser.post(LABELS.format(index=71), json={"text": "bob by token"}, headers=ws.auth("bob"))
        assert r.status_code == 201 and r.json()["author"] == "bob"
    assert history(ws, 71) == ["bob by token"]
