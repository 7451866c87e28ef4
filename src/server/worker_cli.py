"""``python -m server.worker_cli``: Dramatiq's command line with the product's logging.

``exams worker`` execs this, so Dramatiq's master and fork processes log through the same
structlog configuration (JSON lines) as the worker processes, instead of Dramatiq's plain text.
"""

from __future__ import annotations

import sys

from dramatiq.cli import main as dramatiq_main

from core.logging import configure_logging
from core.settings import load_settings


def main() -> None:
    """Configure logging, then run Dramatiq's CLI with this process's arguments."""
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    sys.exit(dramatiq_main())  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
