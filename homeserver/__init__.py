"""Ganglion: a Matrix homeserver built to scale out."""

__version__ = "0.1.0"
