"""The host's parts behind the ``Host`` facade: registry (and its typed keywords), lifecycle,
controls, publishing, signals.

Imports operating and everything below it; ``consumer_host.host`` composes them.
"""
