"""``exams tokens create|list|revoke``: the API tokens of ``API_AUTH=tokens`` (``access.tokens``)."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from server.cli_jobs import _with_database
from server.commands import load_settings_or_exit, one_line

if TYPE_CHECKING:
    from access.models import ApiToken
    from core.db import Database

# The product's modules are imported inside the commands (see server.cli_jobs).

__all__ = ("tokens",)

T = TypeVar("T")

#: ``--scope`` choices (``access.principal.SCOPES``, written out: imported inside the commands).
_SCOPES = ("submit", "read_all")


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"


def _run(work: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``work`` on this command's database; a database that cannot be reached exits 1."""
    settings = load_settings_or_exit()
    try:
        return _with_database(settings, work)
    except (OSError, SQLAlchemyError) as exc:
        click.echo(f"exams: cannot reach the database: {one_line(exc)}", err=True)
        sys.exit(1)


@click.group()
def tokens() -> None:
    """API tokens (needed with API_AUTH=tokens)."""


@tokens.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(_SCOPES),
    help="submit: may submit exams (the default); read_all: sees every job and result. Repeat for both.",
)
def create(name: str, scopes: tuple[str, ...]) -> None:
    """Create the token NAME and print it, alone on the last line (shown once; only its hash is kept)."""
    from access.tokens import TokenError, TokenExistsError, check_name, create_token
    from core.audit import record

    try:
        check_name(name)
    except TokenError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None

    async def work(database: Database) -> tuple[list[str], str]:
        async with database.transaction() as session:
            row, token = await create_token(session, name, scopes)
            await record(
                session,
                actor=_operator(),
                action="tokens.create",
                target={"token": name},
                detail={"scopes": row.scopes},
            )
        return list(row.scopes), token

    try:
        granted, token = _run(work)
    except TokenExistsError as exc:
        click.echo(f"exams: {exc}", err=True)
        sys.exit(1)
    click.echo(f"token {name!r} created, scopes: {', '.join(granted)}")
    click.echo("It is shown only this once: store it now (send it as `Authorization: Bearer <token>`).")
    click.echo(token)


def _when(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if hasattr(value, "strftime") else "-"


@tokens.command("list")
def list_tokens() -> None:
    """Every token: name, scopes, created, last used and revoked (UTC); never the token itself."""
    from access.tokens import list_tokens as all_tokens

    async def work(database: Database) -> list[ApiToken]:
        async with database.transaction() as session:
            return list(await all_tokens(session))

    rows = _run(work)
    width = max([len("name"), *(len(row.name) for row in rows)])
    click.echo(f"{'name':<{width}}  {'scopes':<16}  {'created':<19}  {'last used':<19}  revoked")
    for row in rows:
        scopes = ",".join(row.scopes)
        click.echo(
            f"{row.name:<{width}}  {scopes:<16}  {_when(row.created_at):<19}  "
            f"{_when(row.last_used_at):<19}  {_when(row.revoked_at)}"
        )
    if not rows:
        click.echo("(no tokens)")


@tokens.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke the token NAME at once (every web process); what it submitted stays."""
    from access.tokens import revoke_token
    from core.audit import record

    async def work(database: Database) -> bool | None:
        async with database.transaction() as session:
            found = await revoke_token(session, name)
            if found is None:
                return None
            if found[1]:
                await record(session, actor=_operator(), action="tokens.revoke", target={"token": name})
            return found[1]

    changed = _run(work)
    if changed is None:
        click.echo(f"exams: no token named {name!r} (see `exams tokens list`)", err=True)
        sys.exit(1)
    click.echo(f"token {name!r} revoked" if changed else f"token {name!r} was already revoked")
