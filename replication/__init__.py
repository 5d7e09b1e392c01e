"""Keeping processes in step: positions over Redis, catch-up by position, writes over HTTP."""
