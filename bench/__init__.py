"""Side-by-side throughput benchmark: raw kombu, consumer-host and Celery on the same messages."""
