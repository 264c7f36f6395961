"""Broker transports behind one small interface (:mod:`consumer_host.transports.base`): AMQP and
kombu's in-process brokers, Redis lists, Redis Streams; broker URLs, producers, dead-letter stores.

The only layer that imports kombu, py-amqp and redis-py; imports supervision and the base only.
"""
