"""What every ``exams`` command shares: settings or a one-line exit, and running a coroutine."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from core.settings import Settings, SettingsError, check_production, load_settings

__all__ = ("check_production_or_exit", "load_settings_or_exit", "one_line", "run_async")

T = TypeVar("T")


def load_settings_or_exit() -> Settings:
    """Read the settings, or print the one bad setting and exit 2."""
    try:
        return load_settings()
    except SettingsError as exc:
        click.echo(f"exams: bad setting: {exc}", err=True)
        sys.exit(2)


def check_production_or_exit(settings: Settings, *, web: bool) -> None:
    """Apply :func:`core.settings.check_production`: print the one refused setting and exit 2."""
    try:
        check_production(settings, web=web)
    except SettingsError as exc:
        click.echo(f"exams: bad setting: {exc}", err=True)
        sys.exit(2)


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine to completion from a command."""
    return asyncio.run(factory())  # type: ignore[arg-type]


def one_line(exc: BaseException) -> str:
    """An exception as one short line (a database driver's message can be a page)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    if not text and isinstance(exc, TimeoutError):
        text = ["no answer in time"]
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
