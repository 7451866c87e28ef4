"""Who may call the exam-results API: API tokens and their scopes, the student page's signed
tokens, and the submit rate limit.

``access`` imports only ``core`` and ``i18n``. ``jobs`` and ``exams`` use its
:class:`~access.principal.Principal` (the caller, injected by name as ``principal``) and
:class:`~access.web.ApiAccess`; ``server`` builds them (``server.app.create_app``), wires the
guard onto the exam-results routes and hosts ``exams tokens``.
"""
