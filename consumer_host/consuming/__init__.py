"""One consumer instance and its parts: options, decoding, running handlers (and the middleware
around them), settling outcomes.

Imports transports, supervision and the base; never kombu or redis-py directly, never the host.
"""
