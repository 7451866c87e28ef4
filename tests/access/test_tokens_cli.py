"""``exams tokens create|list|revoke`` (real commands on a real database).

``create`` prints the token alone on its last line, stores only a digest of it, and refuses a
name that exists; ``list`` never shows a token; ``revoke`` ends it at once. Each change is in
the audit log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from access_support import NO_AI, add_token
from sqlalchemy import select

from access.models import ApiToken
from access.tokens import TokenError, authenticate_token, check_name
from core.audit import AuditEntry
from core.db import Database
from core.settings import load_settings
from support import NO_ENV_FILE, base_env, run_exams


def _query(database_url: str, statement: Any) -> list[Any]:
    async def go() -> list[Any]:
        database = Database.from_settings(load_settings({"DATABASE_URL": database_url}, env_file=NO_ENV_FILE))
        try:
            async with database.transaction() as session:
                return list((await session.scalars(statement)).all())
        finally:
            await database.dispose()

    return asyncio.run(go())


def _holder(database_url: str, token: str) -> Any:
    async def go() -> Any:
        database = Database.from_settings(load_settings({"DATABASE_URL": database_url}, env_file=NO_ENV_FILE))
        try:
            return await authenticate_token(database, token)
        finally:
            await database.dispose()

    return asyncio.run(go())


def test_create_list_and_revoke_tokens(fresh_sqlite: Callable[[], str]) -> None:
    url = fresh_sqlite()
    env = base_env(url, NO_AI, API_AUTH="tokens")
    school_token = add_token(url, "school-a")  # as `exams tokens create school-a`: the default scope

    created = run_exams(["tokens", "create", "reporting", "--scope", "read_all", "--scope", "submit"], env)
    *text, token = created.stdout.splitlines()
    assert token.startswith("exm_")
    assert " " not in token
    assert "submit, read_all" in text[0]
    assert all(token not in line for line in text)

    again = run_exams(["tokens", "create", "reporting"], env, check=False)
    assert again.returncode == 1
    assert again.stdout == ""
    assert "exams: a token named 'reporting' exists already" in again.stderr

    school, reporting = _query(url, select(ApiToken).order_by(ApiToken.id))
    assert (school.name, school.scopes) == ("school-a", ["submit"])
    assert (reporting.name, reporting.scopes) == ("reporting", ["submit", "read_all"])
    assert token not in (reporting.secret_hash, reporting.key_id)
    holder = _holder(url, token)
    assert (holder.name, holder.scopes) == ("reporting", frozenset({"submit", "read_all"}))

    listed = run_exams(["tokens", "list"], env).stdout
    header, *rows = listed.splitlines()
    assert header.split() == ["name", "scopes", "created", "last", "used", "revoked"]
    by_name = {row.split()[0]: row.split() for row in rows}
    assert set(by_name) == {"school-a", "reporting"}
    assert by_name["reporting"][1] == "submit,read_all"
    assert by_name["school-a"][1] == "submit"
    assert by_name["reporting"][-1] == "-"  # not revoked
    assert by_name["reporting"][-2] != "-"  # used above (authenticated once)
    for secret in (token, school_token, reporting.secret_hash):
        assert secret not in listed

    revoked = run_exams(["tokens", "revoke", "reporting"], env)
    assert revoked.stdout.strip() == "token 'reporting' revoked"
    assert _holder(url, token) is None
    assert _holder(url, school_token) is not None
    (reporting,) = _query(url, select(ApiToken).where(ApiToken.name == "reporting"))
    assert reporting.revoked_at is not None

    actions = [(e.action, e.target) for e in _query(url, select(AuditEntry).order_by(AuditEntry.id))]
    assert actions == [("tokens.create", {"token": "reporting"}), ("tokens.revoke", {"token": "reporting"})]


def test_token_names_are_plain_words() -> None:
    for good in ("school-a", "District_7.reports", "a", "x" * 64):
        assert check_name(good) == good
    for bad in ("", "-leading-dash", "with space", "x" * 65, "naïve", "a/b"):
        with pytest.raises(TokenError, match="a token name is 1 to 64 letters"):
            check_name(bad)
