"""``--processes N``: a parent supervising child hosts, their aggregated health, ``--reload``.

Imports the host and everything below it; only the CLI imports this package.
"""
