"""The host's parts behind the ``Host`` facade: registry, lifecycle, controls, signals.

Imports operating and everything below it; ``consumer_host.host`` composes them.
"""
