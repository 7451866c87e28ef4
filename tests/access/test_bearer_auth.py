"""``API_AUTH=tokens``: every ``/api/exam-results…`` route needs a valid bearer token; nothing else does.

A missing, malformed, unknown or revoked token is a ``401`` problem (localised, with
``WWW-Authenticate: Bearer``) before anything else is looked at; the catalog, the operations
endpoints and the documentation stay public. The OpenAPI document declares the bearer scheme
and the ``401``/``403``/``429`` answers of the routes they can come from.
"""

from __future__ import annotations

import asyncio
import uuid

from access_support import TokensApp, bearer, submit

from access.tokens import revoke_token
from core.db import Database
from core.settings import load_settings
from support import NO_ENV_FILE, ExamsApp

JOB = str(uuid.uuid4())
#: (method, path) of every exam-results route.
ROUTES = [
    ("POST", "/api/exam-results/process"),
    ("GET", f"/api/exam-results/status/{JOB}"),
    ("GET", f"/api/exam-results/status/{JOB}/events"),
    ("POST", f"/api/exam-results/status/{JOB}/cancel"),
    ("GET", f"/api/exam-results/{JOB}"),
    ("GET", "/api/exam-results"),
    ("GET", "/api/exam-results?format=csv"),
]


def _revoke(database_url: str, name: str) -> None:
    async def work() -> None:
        database = Database.from_settings(load_settings({"DATABASE_URL": database_url}, env_file=NO_ENV_FILE))
        try:
            async with database.transaction() as session:
                assert await revoke_token(session, name) is not None
        finally:
            await database.dispose()

    asyncio.run(work())


def test_every_exam_results_route_needs_a_valid_bearer_token(tokens_app: TokensApp) -> None:
    token = tokens_app.token("auth-revoked")
    app = tokens_app.started()
    assert submit(app, token).status_code == 202
    _revoke(tokens_app.database_url, "auth-revoked")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    sent = {
        "nothing": ({}, "Bearer"),
        "another scheme": ({"Authorization": f"Basic {token}"}, "Bearer"),
        "an empty bearer": ({"Authorization": "Bearer "}, "Bearer"),
        "garbage": (bearer("not-a-token"), 'Bearer error="invalid_token"'),
        "an unknown token": (bearer(f"exm_{'0' * 12}_{'x' * 43}"), 'Bearer error="invalid_token"'),
        "a forged secret": (bearer(forged), 'Bearer error="invalid_token"'),
        "a revoked token": (bearer(token), 'Bearer error="invalid_token"'),
        "a forged page token": (bearer("page.abc.9999999999.0000"), 'Bearer error="invalid_token"'),
    }
    for method, path in ROUTES:
        for what, (headers, challenge) in sent.items():
            response = app.http.request(method, path, headers=headers, json={"exam_code": "MATH-101"})
            assert response.status_code == 401, (method, path, what, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["www-authenticate"] == challenge, what
            problem = response.json()
            assert problem["type"] == "/problems/unauthorized"
            assert problem["status"] == 401
    missing = app.http.get(ROUTES[1][1], headers={"Accept-Language": "ar"}).json()
    revoked = app.http.get(ROUTES[1][1], headers=bearer(token, **{"Accept-Language": "ar"})).json()
    assert missing["title"] == revoked["title"] == "غير مصرّح"
    assert "Authorization: Bearer" in missing["detail"]
    assert "مُلغى" in revoked["detail"]
    english = app.http.get(ROUTES[1][1], headers=bearer(token)).json()
    assert english["title"] == "Unauthorized"
    assert english["detail"] == "The access token is unknown, revoked or expired."


def test_the_catalog_and_the_operations_endpoints_stay_public(tokens_app: TokensApp) -> None:
    app = tokens_app.started()
    for path in ("/api/exams", "/api/exams/MATH-101", "/api/exams/MATH-101/summary", "/health", "/metrics", "/"):
        response = app.http.get(path)
        assert response.status_code == 200, (path, response.text)
    assert app.http.get("/api/documentation/openapi.json").status_code == 200
    assert app.http.get("/ready").status_code in (200, 503)  # not a 401: it reports, it is not guarded


def test_openapi_declares_the_bearer_scheme_and_the_answers_of_the_guard(tokens_app: TokensApp) -> None:
    doc = tokens_app.started().http.get("/api/documentation/openapi.json").json()
    scheme = doc["components"]["securitySchemes"]["ApiToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if path.startswith("/api/exam-results"):
                assert operation["security"] == [{"ApiToken": []}], (method, path)
                assert "401" in responses, (method, path)
                assert "WWW-Authenticate" in responses["401"]["headers"]
                submits = operation["operationId"] == "SubmitExam"
                assert ("403" in responses) is submits, (method, path)
                assert ("429" in responses) is submits, (method, path)
            else:
                assert "security" not in operation, (method, path)
                assert "401" not in responses, (method, path)
    rate_limited = doc["paths"]["/api/exam-results/process"]["post"]["responses"]["429"]
    assert "Retry-After" in rate_limited["headers"]


def test_with_api_auth_off_the_scheme_is_documented_but_not_required(off_app: ExamsApp) -> None:
    app = off_app.start()
    doc = app.http.get("/api/documentation/openapi.json").json()
    assert "ApiToken" in doc["components"]["securitySchemes"]
    assert "security" not in doc["paths"]["/api/exam-results/process"]["post"]
    assert app.http.get(f"/api/exam-results/status/{JOB}").status_code == 404  # no token needed
    assert submit(app, None).status_code == 202
