"""Broker transports behind one small interface; see :mod:`consumer_host.transports.base`."""
