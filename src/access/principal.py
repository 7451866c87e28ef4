"""The caller of the exam-results API, and what it may see and do.

Three kinds of caller:

- ``anonymous``: ``API_AUTH=off``; may do everything, sees every job and result;
- ``token``: an API token (``exams tokens create``), with its scopes;
- ``page``: the student page of one browser session (a signed token the page is rendered
  with); may submit, and sees only what that page session submitted.

A caller without ``read_all`` sees only what it submitted: jobs and results carry an ``owner``
(:attr:`Principal.owner`), and every read is narrowed to it (:attr:`Principal.only_owner`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ("READ_ALL", "SCOPES", "SUBMIT", "Principal")

#: May submit exams (``POST /api/exam-results/process``).
SUBMIT = "submit"
#: Sees every job and result, not only its own.
READ_ALL = "read_all"
SCOPES = (SUBMIT, READ_ALL)

PrincipalKind = Literal["anonymous", "token", "page"]


@dataclass(frozen=True)
class Principal:
    """One caller: its kind, name (token name or page session id), scopes and network address."""

    kind: PrincipalKind
    name: str
    scopes: frozenset[str]
    address: str

    @classmethod
    def anonymous(cls, address: str) -> Principal:
        """A caller with ``API_AUTH=off``: every scope, no owner."""
        return cls("anonymous", "", frozenset(SCOPES), address)

    @classmethod
    def token(cls, name: str, scopes: frozenset[str], address: str) -> Principal:
        """The holder of the API token ``name``."""
        return cls("token", name, scopes, address)

    @classmethod
    def page(cls, session_id: str, address: str) -> Principal:
        """The student page of one browser session: submits, and reads back its own jobs."""
        return cls("page", session_id, frozenset({SUBMIT}), address)

    @property
    def owner(self) -> str | None:
        """What this caller's submissions are stamped with (``None`` with ``API_AUTH=off``)."""
        if self.kind == "anonymous":
            return None
        return f"{self.kind}:{self.name}"

    @property
    def reads_all(self) -> bool:
        """Whether this caller sees every job and result."""
        return READ_ALL in self.scopes

    @property
    def only_owner(self) -> str | None:
        """The owner every read of this caller is narrowed to; ``None``: no narrowing."""
        return None if self.reads_all else self.owner

    def sees(self, owner: str | None) -> bool:
        """Whether a job or result stamped with ``owner`` is visible to this caller."""
        return self.reads_all or (owner is not None and owner == self.owner)

    @property
    def rate_key(self) -> str:
        """Whose submissions ``SUBMIT_RATE_LIMIT`` counts together.

        An API token's own; everyone else's by network address. A page token costs nothing to
        get (any visit to ``/`` makes one), so counting per page session would limit nothing.
        """
        if self.kind == "token":
            return f"token:{self.name}"
        return f"address:{self.address}"
