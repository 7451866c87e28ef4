"""The dashboard's app for the in-process tests: operator ``ops`` and viewer ``vera``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from test_access import OPERATOR_PASSWORD, VIEWER_PASSWORD, add_user

from support import ExamsApp


@pytest.fixture
def admin_app(make_app: Callable[..., ExamsApp]) -> ExamsApp:
    app = make_app(ADMIN_USERNAME="ops", ADMIN_PASSWORD=OPERATOR_PASSWORD, SECRET_KEY="test-secret-key-0123456789")
    add_user(app, "vera", "viewer", VIEWER_PASSWORD)
    return app
