"""Completion callbacks: who may receive them, the outbox row, and one signed delivery attempt.

When a job reaches a terminal state, the transaction that records it also inserts a
``exam_callback_deliveries`` row (the outbox) holding the exact body: the status document in the
submitter's language. A Dramatiq actor (``jobs.actors``) then makes the attempts; the scheduler
re-sends any delivery whose message was lost. A delivery never blocks or fails its job.

Each attempt POSTs the same bytes with the same ``X-Exams-Delivery`` id, signed with
``CALLBACK_SECRET``; it follows no redirect and waits at most 10 s. The host is checked against
``CALLBACK_ALLOWED_HOSTS`` at submit time and again here, after DNS resolution: a name resolving to
a private, loopback or otherwise non-public address is refused unless that exact host is listed
(a wildcard is not enough). The connection goes to the address that was checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID, uuid4

import httpx
import msgspec
import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import metrics
from core.db import Database
from core.retry import backoff_seconds
from core.settings import Settings
from jobs.documents import status_document
from jobs.models import CallbackDelivery, ExamProcessingJob, utcnow
from jobs.schemas import MAX_CALLBACK_URL_LENGTH

__all__ = (
    "ATTEMPT_TIMEOUT",
    "FIRST_RETRY_SECONDS",
    "GIVE_UP_AFTER",
    "MAX_RETRY_SECONDS",
    "AttemptOutcome",
    "attempt_delivery",
    "callback_url_problems",
    "due_deliveries",
    "host_allowed",
    "list_deliveries",
    "new_delivery",
    "signature",
)

log = structlog.get_logger("jobs.callbacks")

#: Seconds one attempt may take, connection included.
ATTEMPT_TIMEOUT: Final = 10.0
#: Wait before the first retry; each later wait doubles, up to :data:`MAX_RETRY_SECONDS`.
FIRST_RETRY_SECONDS: Final = 5.0
MAX_RETRY_SECONDS: Final = 3600.0
#: A delivery still failing this long after the job ended is given up.
GIVE_UP_AFTER: Final = timedelta(hours=24)
#: While an attempt runs, its row is not due (longer than an attempt can take).
_LEASE: Final = timedelta(seconds=ATTEMPT_TIMEOUT + 20)
#: A message may arrive this much before the attempt's time (clocks of two hosts).
_EARLY: Final = timedelta(seconds=2)
EVENTS: Final = {"completed": "job.completed", "failed": "job.failed", "cancelled": "job.cancelled"}
_USER_AGENT = "exams-callbacks/1"


def _normalise_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether ``host`` is listed exactly, or under a ``*.domain`` wildcard (subdomains only)."""
    name = _normalise_host(host)
    for entry in allowed:
        pattern = _normalise_host(entry)
        if pattern.startswith("*."):
            if name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
                return True
        elif name == pattern:
            return True
    return False


def _listed_exactly(host: str, allowed: Sequence[str]) -> bool:
    name = _normalise_host(host)
    return any(_normalise_host(entry) == name for entry in allowed)


def callback_url_problems(url: object, allowed: Sequence[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """The problems of a submission's ``callback_url`` (empty when it may be used)."""
    field = "callback_url"
    if not allowed:
        return [(field, "validation.callbacks_disabled", {})]
    if not isinstance(url, str):
        return [(field, "validation.not_string", {})]
    shape = [(field, "validation.callback_url", {"max": MAX_CALLBACK_URL_LENGTH})]
    if len(url) > MAX_CALLBACK_URL_LENGTH or not url.isprintable() or any(ch.isspace() for ch in url):
        return shape
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
    except ValueError:
        return shape
    if parts.scheme.lower() not in ("http", "https") or not host or parts.username is not None:
        return shape
    if not host_allowed(host, allowed):
        return [(field, "validation.callback_host", {"host": host[:255]})]
    return []


def signature(secret: str, body: bytes) -> str:
    """The ``X-Exams-Signature`` value of ``body``: ``sha256=`` and the hex HMAC-SHA256 with ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def new_delivery(job: ExamProcessingJob, now: datetime) -> CallbackDelivery | None:
    """The outbox row for a job that just reached a terminal state (``None`` without a ``callback_url``).

    Add it to the session that records the terminal state, so both commit together.
    """
    event = EVENTS.get(job.status)
    if not job.callback_url or event is None:
        return None
    payload = msgspec.json.encode(status_document(job, job.locale)).decode()
    return CallbackDelivery(
        delivery_id=uuid4(),
        job_id=job.job_id,
        student_id=job.student_id,
        url=job.callback_url,
        event=event,
        payload=payload,
        state="pending",
        attempts=0,
        next_attempt_at=now,
    )


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt got: an HTTP status, or an error; ``refused`` when it must not be retried."""

    status: int | None
    error: str | None
    refused: bool = False

    @property
    def delivered(self) -> bool:
        """Whether the receiver accepted it (any 2xx)."""
        return self.status is not None and 200 <= self.status < 300


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _post(
    delivery: Any,
    settings: Settings,
    resolve: Resolver,
    transport: httpx.AsyncBaseTransport | None,
) -> AttemptOutcome:
    parts = urlsplit(delivery.url)
    host = parts.hostname or ""
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    allowed = settings.callback_allowed_hosts
    if not host_allowed(host, allowed):
        return AttemptOutcome(None, f"host {host} is not in CALLBACK_ALLOWED_HOSTS", refused=True)
    try:
        addresses = await asyncio.wait_for(resolve(host, port), ATTEMPT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        return AttemptOutcome(None, f"cannot resolve {host}: {type(exc).__name__}: {exc}"[:300])
    if not addresses:
        return AttemptOutcome(None, f"cannot resolve {host}")
    if not _listed_exactly(host, allowed) and not all(_public(a) for a in addresses):
        return AttemptOutcome(None, f"{host} resolves to a non-public address", refused=True)
    address = addresses[0]
    netloc_ip = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((scheme, f"{netloc_ip}:{port}", parts.path or "/", parts.query, ""))
    body = delivery.payload.encode()
    headers = {
        "Host": parts.netloc.rsplit("@", 1)[-1],
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
        "X-Exams-Event": delivery.event,
        "X-Exams-Delivery": str(delivery.delivery_id),
        "X-Exams-Signature": signature(settings.callback_secret, body),
    }
    extensions = {"sni_hostname": host} if scheme == "https" else {}
    try:
        async with (
            asyncio.timeout(ATTEMPT_TIMEOUT),
            httpx.AsyncClient(
                timeout=ATTEMPT_TIMEOUT, follow_redirects=False, trust_env=False, transport=transport
            ) as client,
        ):
            response = await client.post(pinned, content=body, headers=headers, extensions=extensions)
    except TimeoutError:
        return AttemptOutcome(None, f"no answer within {ATTEMPT_TIMEOUT:g} s")
    except httpx.HTTPError as exc:
        return AttemptOutcome(None, f"{type(exc).__name__}: {exc}"[:300])
    if 200 <= response.status_code < 300:
        return AttemptOutcome(response.status_code, None)
    return AttemptOutcome(response.status_code, f"HTTP {response.status_code}")


_COLUMNS = (
    CallbackDelivery.delivery_id,
    CallbackDelivery.job_id,
    CallbackDelivery.url,
    CallbackDelivery.event,
    CallbackDelivery.payload,
    CallbackDelivery.attempts,
    CallbackDelivery.created_at,
)


async def attempt_delivery(
    database: Database,
    settings: Settings,
    delivery_id: UUID,
    *,
    first_retry: float = FIRST_RETRY_SECONDS,
    resolve: Resolver = _resolve,
    transport: httpx.AsyncBaseTransport | None = None,
) -> float | None:
    """Make one attempt at a due delivery; return the seconds until the next one, or ``None`` when done.

    Done means delivered, given up, or nothing to do (unknown, finished, or not due: a duplicate
    message). Each attempt is recorded on the row. ``first_retry`` (seconds) is the first wait;
    each later one doubles, capped at an hour; after :data:`GIVE_UP_AFTER` it gives up.
    """
    now = utcnow()
    async with database.transaction() as session:
        claimed = await session.execute(
            update(CallbackDelivery)
            .where(
                CallbackDelivery.delivery_id == delivery_id,
                CallbackDelivery.state == "pending",
                or_(CallbackDelivery.next_attempt_at.is_(None), CallbackDelivery.next_attempt_at <= now + _EARLY),
            )
            .values(
                attempts=CallbackDelivery.attempts + 1,
                last_attempt_at=now,
                next_attempt_at=now + _LEASE,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if not getattr(claimed, "rowcount", 0):
            return None
        delivery = (await session.execute(select(*_COLUMNS).where(CallbackDelivery.delivery_id == delivery_id))).one()
    fields = {"delivery_id": str(delivery_id), "job_id": str(delivery.job_id), "callback_event": delivery.event}
    outcome = await _post(delivery, settings, resolve, transport)
    now = utcnow()
    values: dict[str, Any] = {"last_status": outcome.status, "last_error": outcome.error, "updated_at": now}
    delay: float | None = None
    if outcome.delivered:
        values |= {"state": "delivered", "delivered_at": now, "next_attempt_at": None}
        result = "delivered"
    elif outcome.refused or now - delivery.created_at >= GIVE_UP_AFTER:
        values |= {"state": "gave_up", "gave_up_at": now, "next_attempt_at": None}
        result = "gave_up"
    else:
        delay = backoff_seconds(delivery.attempts, base=first_retry, cap=MAX_RETRY_SECONDS, jitter=False)
        values["next_attempt_at"] = now + timedelta(seconds=delay)
        result = "retry"
    async with database.transaction() as session:
        await session.execute(
            update(CallbackDelivery)
            .where(CallbackDelivery.delivery_id == delivery_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    metrics.CALLBACKS.labels(outcome=result).inc()
    line = log.info if outcome.delivered else log.warning
    line(
        "exam callback " + ("delivered" if result == "delivered" else "gave up" if result == "gave_up" else "failed"),
        **fields,
        attempt=delivery.attempts,
        http_status=outcome.status,
        error=outcome.error,
        retry_in_seconds=delay,
    )
    return delay


async def due_deliveries(session: AsyncSession, *, overdue: float, limit: int = 500) -> list[UUID]:
    """Pending deliveries overdue by ``overdue`` seconds (their message was lost); marked due now."""
    now = utcnow()
    ids = list(
        (
            await session.execute(
                select(CallbackDelivery.delivery_id)
                .where(
                    CallbackDelivery.state == "pending",
                    CallbackDelivery.next_attempt_at < now - timedelta(seconds=overdue),
                )
                .order_by(CallbackDelivery.next_attempt_at)
                .limit(limit)
            )
        ).scalars()
    )
    if ids:
        await session.execute(
            update(CallbackDelivery)
            .where(CallbackDelivery.delivery_id.in_(ids), CallbackDelivery.state == "pending")
            .values(next_attempt_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    return ids


async def list_deliveries(session: AsyncSession, *, failed: bool = False, limit: int = 50) -> list[CallbackDelivery]:
    """The newest deliveries; ``failed``: those given up, or pending after a failed attempt."""
    query = select(CallbackDelivery).order_by(CallbackDelivery.created_at.desc(), CallbackDelivery.id.desc())
    if failed:
        query = query.where(
            or_(
                CallbackDelivery.state == "gave_up",
                (CallbackDelivery.state == "pending") & (CallbackDelivery.attempts > 0),
            )
        )
    return list((await session.execute(query.limit(limit))).scalars())
