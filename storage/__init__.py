"""Database access: one store API over SQLite and PostgreSQL, with versioned migrations."""
