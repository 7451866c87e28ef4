"""exams package."""
