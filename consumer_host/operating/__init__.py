"""What operators see and steer: the health server, probes, metrics, logs, control endpoints.

Imports consuming, transports, supervision and the base; never the host or the CLI.
"""
