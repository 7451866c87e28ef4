"""The student page with ``API_AUTH=tokens``: its own short-lived token, scoped to its browser session.

The page is rendered with a signed token (``<meta name="exams-api-token">``) and a session cookie;
what it submits with that token is owned by its page session, which reads it back and nobody
else does (another browser, an API token without ``read_all``). A reload keeps the session, an
expired or tampered token is a ``401``. With ``API_AUTH=off`` the page is as before: no token,
no cookie.
"""

from __future__ import annotations

import re
import time

from access_support import TokensApp, bearer, submit, wait_completed

from access.page import PAGE_COOKIE, PAGE_TOKEN_SECONDS, issue_page_token, read_page_token
from support import ExamsApp

TOKEN_META = re.compile(r'<meta name="exams-api-token" content="([^"]+)">')


def _page_token(app: ExamsApp, lang: str = "en") -> str:
    page = app.http.get("/", params={"lang": lang})
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    match = TOKEN_META.search(page.text)
    assert match is not None, "the page carries no API token"
    return match.group(1)


def test_the_page_reads_back_what_it_submitted_and_nobody_else_does(tokens_app: TokensApp) -> None:
    api_token, reader = tokens_app.token("page-neighbour"), tokens_app.token("page-reader", "read_all")
    app = tokens_app.started()
    app.http.cookies.clear()

    token = _page_token(app)
    cookie = app.http.cookies[PAGE_COOKIE]
    set_cookie = app.http.get("/").headers["set-cookie"].lower()
    assert "httponly" in set_cookie
    assert "samesite=lax" in set_cookie
    assert "max-age" not in set_cookie  # ends with the browser session

    response = submit(app, token)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    done = wait_completed(app, token, job_id)
    assert done["result"]["passed"] is True
    assert app.http.get(f"/api/exam-results/{job_id}", headers=bearer(token)).status_code == 200
    mine = app.http.get("/api/exam-results", headers=bearer(token)).json()["items"]
    assert [item["job_id"] for item in mine] == [job_id]

    # An API token without read_all, and another browser's page, do not see it.
    assert app.http.get(f"/api/exam-results/status/{job_id}", headers=bearer(api_token)).status_code == 404
    app.http.cookies.clear()
    stranger = _page_token(app)
    assert app.http.get(f"/api/exam-results/status/{job_id}", headers=bearer(stranger)).status_code == 404
    assert app.http.get(f"/api/exam-results/{job_id}", headers=bearer(stranger)).status_code == 404
    assert app.http.get("/api/exam-results", headers=bearer(stranger)).json()["items"] == []
    # The page session cannot see an API token's jobs either; read_all sees the page's.
    theirs = submit(app, api_token).json()["job_id"]
    assert app.http.get(f"/api/exam-results/status/{theirs}", headers=bearer(token)).status_code == 404
    assert app.http.get(f"/api/exam-results/status/{job_id}", headers=bearer(reader)).status_code == 200

    # A reload (or a language switch) in the same browser session resumes the job.
    app.http.cookies.clear()
    app.http.cookies.set(PAGE_COOKIE, cookie)
    again = _page_token(app, lang="ar")
    assert app.http.get(f"/api/exam-results/status/{job_id}", headers=bearer(again)).status_code == 200


def test_an_expired_or_tampered_page_token_is_refused(tokens_app: TokensApp) -> None:
    app = tokens_app.started()
    key = app.settings.secret_key
    token = _page_token(app)
    session_id = read_page_token(key, token, time.time())
    assert session_id is not None
    assert read_page_token(key, token, time.time() + PAGE_TOKEN_SECONDS + 1) is None
    expired = issue_page_token(key, session_id, time.time() - PAGE_TOKEN_SECONDS - 1)
    tampered = token.replace(f".{session_id}.", f".{session_id[::-1]}.")
    other_key = issue_page_token("another-secret-key-0123456789", session_id, time.time())
    for bad in (expired, tampered, other_key, token[:-1]):
        response = submit(app, bad)
        assert response.status_code == 401, bad
        assert response.json()["type"] == "/problems/unauthorized"
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert submit(app, token).status_code == 202


def test_with_api_auth_off_the_page_has_no_token(off_app: ExamsApp) -> None:
    app = off_app.start()
    app.http.cookies.clear()
    page = app.http.get("/")
    assert page.status_code == 200
    assert "exams-api-token" not in page.text
    assert "set-cookie" not in page.headers
    job_id = submit(app, None).json()["job_id"]
    assert app.http.get(f"/api/exam-results/status/{job_id}").status_code == 200
