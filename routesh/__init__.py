"""routesh: ask a SQLite or PostgreSQL database questions in plain language."""

__version__ = "0.1.0"
