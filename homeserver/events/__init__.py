"""The pure event core: room versions, formats, hashing, signing, auth rules, state resolution.

Nothing in this package performs I/O.
"""
