"""Supervision: run a worker, catch, back off, restart, trip; breakers and the events they emit.

Imports only the base modules (errors, clock); knows nothing of brokers, HTTP or the CLI.
"""
