"""Credentials in URLs urllib cannot parse stay out of every output (hostile run, findings 4, 8).

A password with a space, ``#`` or ``/`` that nobody percent-encoded; a malformed IPv6 host; a
``--url`` with credentials for the control commands. The real CLI: stdout, stderr and the logs
must not hold the secret, and a malformed URL is one line and exit code 2, never a traceback.
Nothing listens on the ports used: these URLs are only parsed, or refused by the kernel.
"""

from __future__ import annotations

import pytest

from consumer_host.errors import ConfigError
from consumer_host.redaction import redact_text, redact_url, redact_userinfo_in
from consumer_host.transports.broker import validate_url

from .helpers import cli, wait_until
from .parents import APP, Parent, app_env

SECRET = "SECRETx"  # noqa: S105 - the marker a test looks for in output

MALFORMED = [
    f"amqp://u:p#w{SECRET}@127.0.0.1:5699//",
    f"redis://u:p#w{SECRET}@127.0.0.1:6399/0",
    f"redis://:pw{SECRET}@[::1:6379/0",
    f"amqp://u:p/w{SECRET}@127.0.0.1:5699//",
]


def assert_no_secret(*outputs: str) -> None:
    for output in outputs:
        assert SECRET not in output, output
        assert "Traceback" not in output, output


@pytest.mark.parametrize("url", MALFORMED)
@pytest.mark.parametrize("via", ["flag", "environment"])
@pytest.mark.parametrize("command", ["check", "run"])
def test_a_malformed_broker_url_is_one_line_exit_2_and_no_secret(url, via, command):
    if via == "flag":
        result = cli(command, str(APP), "--broker", url, env=app_env("q", "/dev/null"))
    else:
        result = cli(
            command, str(APP), env={**app_env("q", "/dev/null"), "CONSUMER_HOST_BROKER_URL": url}
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert_no_secret(result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("consumer-host: error: ")
    assert "'u:p'" not in result.stderr  # no piece of the userinfo quoted either
    assert "as 'p'" not in result.stderr


def test_a_space_in_the_password_is_masked_in_check():
    url = f"redis://:pw {SECRET}@127.0.0.1:6399/0"
    result = cli("check", str(APP), "--broker", url, env=app_env("q", "/dev/null"))
    assert result.returncode == 1, result.stdout + result.stderr  # refused: nothing listens
    assert "redis://:***@127.0.0.1:6399/0" in result.stderr
    assert_no_secret(result.stdout, result.stderr)


def test_a_space_in_the_password_is_masked_in_the_logs_of_run(parents, tmp_path):
    url = f"redis://:pw {SECRET}@127.0.0.1:6399/0"
    parent = Parent(str(APP), "--broker", url, env=app_env("q", str(tmp_path / "ledger")))
    parents.append(parent)
    wait_until(lambda: parent.events("consumer_disconnected"), 20, "a refused connection")
    assert parent.events("broker_selected")
    assert parent.stop() == 0, parent.output
    assert_no_secret(parent.output)
    assert "redis://:***@127.0.0.1:6399/0" in parent.output


@pytest.mark.parametrize("command", [["status"], ["health"], ["pause", "work"]])
def test_a_control_url_with_credentials_is_masked(command):
    url = f"http://admin:{SECRET}@127.0.0.1:1"
    result = cli(*command, "--url", url, env={"CONSUMER_HOST_CONTROL_TOKEN": "t"})
    assert result.returncode != 0
    assert "admin:***@" in result.stderr, result.stderr
    assert_no_secret(result.stdout, result.stderr)


# -- the pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:pw {SECRET}@127.0.0.1:6399/0", "redis://:***@127.0.0.1:6399/0"),
        (f"amqp://u:p#w{SECRET}@h:5699//", "amqp://u:***@h:5699//"),
        (f"amqp://u:p?w{SECRET}@h//", "amqp://u:***@h//"),
        (f"redis://:pw{SECRET}@[::1:6379/0", "redis://:***@[::1:6379/0"),
        (f"redis://u s:p{SECRET}@h:1/0", "redis://***@h:1/0"),  # an odd user is masked too
        (f"amqp://u:a@{SECRET}@h//;amqp://u:b#{SECRET}@g//", "amqp://u:***@h//;amqp://u:***@g//"),
        ("amqp://u:pw@h//", "amqp://u:***@h//"),  # the well-formed ones as before
        ("redis://h:6379/0?password=x", "redis://h:6379/0?password=***"),
    ],
)
def test_redact_url_masks_whatever_the_userinfo_holds(url, shown):
    assert redact_url(url) == shown
    assert (
        redact_text(f"cannot connect to {url} queue 'q'") == f"cannot connect to {shown} queue 'q'"
    )


def test_a_parsers_complaint_loses_every_quoted_piece_of_the_userinfo():
    url = f"redis://u:p#w{SECRET}@127.0.0.1:6399/0"
    said = f"a Redis URL has a port that is not a number: 'u:p' in {url}"
    masked = redact_userinfo_in(said, url)
    assert (
        masked
        == "a Redis URL has a port that is not a number: '***' in redis://u:***@127.0.0.1:6399/0"
    )
    assert redact_userinfo_in("cast as 'p'", f"amqp://u:p#w{SECRET}@h//") == "cast as '***'"
    assert redact_userinfo_in("nothing to mask", "amqp://h//") == "nothing to mask"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:pw{SECRET}@[::1:6379/0",
        f"amqp://u:pw{SECRET}@[::1:5672//",
        f"redis://u:p#w{SECRET}@127.0.0.1:6399/0",
        f"rediss+streams://u:p#w{SECRET}@127.0.0.1:6399/0",
        f"amqp://u:p#w{SECRET}@127.0.0.1:5699//",
        f"amqp://u:p?w{SECRET}@h:5672//",
    ],
)
def test_a_library_user_gets_a_config_error_without_any_piece_of_the_password(url):
    """``Host(broker=...)`` validates without the CLI's masking: the error must be clean."""
    with pytest.raises(ConfigError) as refused:
        validate_url(url)
    said = str(refused.value)
    assert SECRET not in said
    assert "'u:p'" not in said
    assert "'p'" not in said
