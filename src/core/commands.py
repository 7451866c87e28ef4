"""What every ``exams`` command shares: settings or a one-line exit, and running a coroutine."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from core.settings import Settings, SettingsError, get_settings

__all__ = ("load_settings_or_exit", "run_async")

T = TypeVar("T")


def load_settings_or_exit() -> Settings:
    """Read the settings, or print the one bad setting and exit 2."""
    try:
        return get_settings()
    except SettingsError as exc:
        click.echo(f"exams: bad setting: {exc}", err=True)
        sys.exit(2)


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine to completion from a command."""
    return asyncio.run(factory())  # type: ignore[arg-type]
