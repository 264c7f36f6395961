"""The one declaration of consumer options: defaults, validation, typo suggestions, the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from consumer_host import ConfigError, ConsumerOptions, Host, KillSwitch
from consumer_host.consuming.options import options_table

README = Path(__file__).parents[1] / "README.md"


def test_the_readme_table_is_the_declaration():
    text = README.read_text(encoding="utf-8")
    table = re.search(
        r"<!-- consumer-options:start -->\n(.*?)\n<!-- consumer-options:end -->", text, re.S
    )
    assert table is not None
    assert table.group(1) == options_table(ConsumerOptions)


def test_prefetch_follows_concurrency_unless_given():
    assert ConsumerOptions(queue="q").prefetch == 10
    assert ConsumerOptions(queue="q", concurrency=64).prefetch == 128
    assert ConsumerOptions(queue="q", concurrency=4, prefetch=4).prefetch == 4
    with pytest.raises(ConfigError, match=r"prefetch \(2\) must be at least concurrency \(4\)"):
        ConsumerOptions(queue="q", concurrency=4, prefetch=2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prefetch": -1}, "prefetch must be an integer >= 1, got -1"),
        ({"concurrency": 0}, "concurrency must be an integer >= 1, got 0"),
        ({"concurrency": True}, "concurrency must be an integer >= 1, got True"),
        ({"max_deliveries": 0}, "max_deliveries must be an integer >= 1"),
        ({"partition_by": "user"}, "partition_by must be callable"),
        ({"partition_order": "loose"}, "partition_order must be 'strict' or 'fetch'"),
        ({"kill_switch": {"activation": 3}}, "kill_switch must be a KillSwitch or None"),
        ({"stuck_after": 0}, "stuck_after must be > 0 seconds"),
        ({"queue_arguments": ["x"]}, "queue_arguments must be a dict"),
        ({"heartbeat": -1}, "heartbeat must be >= 0 seconds"),
    ],
)
def test_a_bad_option_is_one_error_naming_it(options, message):
    host = Host("shop")
    with pytest.raises(ConfigError) as caught:
        host.consumer("orders", queue="orders", **options)
    assert str(caught.value).startswith("consumer 'orders': ")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("prefech", "prefetch"),
        ("concurency", "concurrency"),
        ("max_retry", "max_retries"),
        ("pol", "pool"),
        ("critcal", "critical"),
    ],
)
def test_a_misspelt_keyword_suggests_the_option(typo, meant):
    host = Host("shop")
    with pytest.raises(ConfigError, match=f"unknown option '{typo}'; did you mean '{meant}'"):
        host.consumer("orders", queue="orders", **{typo: 1})


def test_a_worker_typo_suggests_too():
    host = Host("shop")
    with pytest.raises(ConfigError, match="did you mean 'backoff_max'"):
        host.worker("beat", backof_max=3)


def test_the_kill_switch_is_on_by_default_and_can_be_turned_off():
    assert ConsumerOptions(queue="q").kill_switch == KillSwitch()
    assert ConsumerOptions(queue="q", kill_switch=None).kill_switch is None


def test_partition_by_opens_a_second_window_for_messages_waiting_for_their_key():
    assert ConsumerOptions(queue="q", prefetch=10).queue_spec().prefetch == 10
    keyed = ConsumerOptions(queue="q", prefetch=10, partition_by=lambda m: m.body["k"])
    assert keyed.partition_order == "strict"
    assert keyed.queue_spec().prefetch == 20
