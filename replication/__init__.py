"""Keeping processes in step: stream positions over Redis, catch-up by position, writes over HTTP."""
