"""The composition root: builds the app, the worker, the scheduler and every CLI command from Settings."""
