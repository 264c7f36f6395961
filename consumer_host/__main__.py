"""``python -m consumer_host`` is ``consumer-host``."""

from .cli import main

main()
