"""Which transport a broker URL means."""

from __future__ import annotations

from consumer_host.clock import SYSTEM_CLOCK, Clock

from .base import Producer, QueueSpec, Transport
from .broker import REDIS_SCHEMES, STREAMS_SCHEMES, scheme_of


def transport_for(
    url: str,
    spec: QueueSpec,
    *,
    instance: str,
    heartbeat: float,
    poll_interval: float,
    ack_coalescing: bool,
    group: str | None,
    claim_after: float,
    clock: Clock = SYSTEM_CLOCK,
) -> Transport:
    """kombu for ``amqp://``, ``memory://`` and ``filesystem://``; our own for ``redis://``
    (lists) and ``redis+streams://``. Imports stay local so each brings only its client."""
    scheme = scheme_of(url)
    # Redis has no heartbeats: a read timeout of about the same length notices a dead link.
    read_timeout = max(2.0, heartbeat or 10.0, poll_interval + 1.0)
    if scheme in STREAMS_SCHEMES:
        from .redis_streams import RedisStreamsTransport

        return RedisStreamsTransport(
            url,
            spec,
            instance=instance,
            group=group,
            claim_after=claim_after,
            socket_timeout=read_timeout,
            clock=clock,
        )
    if scheme in REDIS_SCHEMES:
        from .redis_lists import RedisListTransport

        return RedisListTransport(
            url, spec, instance=instance, socket_timeout=read_timeout, clock=clock
        )
    from .kombu_transport import KombuTransport

    return KombuTransport(
        url,
        spec,
        heartbeat=heartbeat,
        ack_coalescing=ack_coalescing,
        clock=clock,
        instance=instance,
    )


def producer_for(url: str, *, connect_timeout: float = 5.0) -> Producer:
    """The producer for ``url``'s broker, from the same module as its transport."""
    scheme = scheme_of(url)
    if scheme in STREAMS_SCHEMES:
        from .redis_streams import StreamsProducer

        return StreamsProducer(url, connect_timeout=connect_timeout)
    if scheme in REDIS_SCHEMES:
        from .redis_lists import RedisListProducer

        return RedisListProducer(url, connect_timeout=connect_timeout)
    from .kombu_producer import KombuProducer

    return KombuProducer(url, connect_timeout=connect_timeout)
