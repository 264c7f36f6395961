"""The public API is typed: mypy --strict checks a user's options, and the typed keywords stay
the same as the option dataclasses the host validates at run time."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from consumer_host import ConfigError, ConsumerOptions, Host, SupervisionOptions
from consumer_host.consuming.options import ConsumerKeywords, ConsumerSettings, option_fields
from consumer_host.hosting import keywords
from consumer_host.hosting.registry import Registry

APPS = Path(__file__).parent / "apps" / "typing"


def _hints(kind: type) -> dict[str, object]:
    return typing.get_type_hints(kind)


def _init_hints(options: type) -> dict[str, object]:
    hints = _hints(options)
    return {spec.name: hints[spec.name] for spec in option_fields(options)}


def test_mypy_strict_passes_a_correct_app_and_names_each_mistake_in_a_wrong_one(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / "cache"),
            "good_app.py",
            "wrong_app.py",
        ],
        cwd=APPS,
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "good_app.py" not in output, output
    marked = {
        number
        for number, line in enumerate((APPS / "wrong_app.py").read_text().splitlines(), 1)
        if "# BAD" in line
    }
    found = {int(n) for n in re.findall(r"^wrong_app\.py:(\d+): error", output, re.M)}
    assert found == marked, output
    assert 'Unexpected keyword argument "prefech"' in output
    assert 'did you mean "prefetch"' in output
    assert 'Argument "pool" to "consumer" of "Host" has incompatible type "str"' in output
    assert 'Missing named argument "queue"' in output
    assert result.returncode == 1


def test_the_typed_consumer_keywords_are_the_consumer_options_name_for_name_and_type_for_type():
    assert _hints(ConsumerKeywords) == _init_hints(ConsumerOptions)
    # Postponed annotations hide Required from __required_keys__; mypy reads it (see above).
    assert "Required" in str(ConsumerKeywords.__annotations__["queue"])
    assert set(_hints(ConsumerSettings)) == set(_init_hints(ConsumerOptions)) - {"queue"}


def test_the_typed_supervision_keywords_are_the_supervision_options():
    assert _hints(keywords.SupervisionKeywords) == _init_hints(SupervisionOptions)
    assert keywords.SupervisionKeywords.__required_keys__ == frozenset()


def test_registration_keywords_combine_consumer_and_supervision_options():
    consumer, supervision = _init_hints(ConsumerOptions), _init_hints(SupervisionOptions)
    assert _hints(keywords.ConsumerRegistration) == {**consumer, **supervision}
    celery = _hints(keywords.CeleryTaskKeywords)
    explicit = {
        name: hint
        for name, hint in typing.get_type_hints(Registry.celery_task).items()
        if name not in {"name", "options", "return"}
    }
    assert celery == {**consumer, **supervision, **explicit}


@pytest.mark.parametrize("method", ["consumer", "worker", "celery_task", "register", "publish"])
def test_host_methods_take_typed_keywords_not_any(method):
    hints = typing.get_type_hints(getattr(Host, method), include_extras=True)
    assert typing.get_origin(hints["options"]) is typing.Unpack


@pytest.mark.parametrize("option", ["concurrency", "prefetch", "max_retries", "pool"])
def test_a_bool_is_not_an_integer_option(option):
    host = Host("shop")
    with pytest.raises(ConfigError, match=option):
        host.consumer("orders", queue="orders", **{option: True})


@pytest.mark.parametrize("option", ["pool", "max_restarts"])
def test_a_bool_is_not_a_workers_integer_option(option):
    host = Host("shop")
    with pytest.raises(ConfigError, match=option):
        host.worker("ticker", **{option: True})
    with pytest.raises(ConfigError, match=option):
        host.celery_task("tasks.add", **{option: True})


def test_the_package_is_marked_typed():
    import consumer_host

    assert (Path(consumer_host.__file__).parent / "py.typed").exists()
