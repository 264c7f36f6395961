import random

import pytest

from consumer_host import Backoff, BackoffPolicy, ConfigError


class TestBackoff:
    def test_sequence_without_jitter_doubles_to_the_cap(self):
        """1, 2, 4 ... 256, then 300 for ever (min 1 s, factor 2, cap 300 s)."""
        backoff = Backoff(BackoffPolicy(jitter=0))
        delays = [backoff.next() for _ in range(12)]
        assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]

    def test_jitter_stays_within_half_to_one_and_a_half_and_under_the_cap(self):
        """Each delay d is drawn from [0.5 d, 1.5 d], and the cap holds after jitter."""
        policy = BackoffPolicy()
        rng = random.Random(7)
        for attempt in range(14):
            base = policy.base_delay(attempt)
            for _ in range(200):
                delay = policy.delay(attempt, rng.random)
                assert 0.5 * base <= delay <= min(1.5 * base, 300.0)

    def test_jitter_extremes_follow_the_random_source(self):
        policy = BackoffPolicy()
        assert policy.delay(3, lambda: 0.0) == 4.0
        assert policy.delay(3, lambda: 0.999999) == pytest.approx(12.0, rel=1e-5)
        assert policy.delay(20, lambda: 0.999999) == 300.0

    def test_reset_starts_again_from_the_minimum(self):
        backoff = Backoff(BackoffPolicy(jitter=0))
        for _ in range(5):
            backoff.next()
        backoff.reset()
        assert backoff.next() == 1.0

    def test_long_outages_do_not_overflow(self):
        assert BackoffPolicy(jitter=0).base_delay(10_000) == 300.0

    @pytest.mark.parametrize(
        ("kwargs", "named"),
        [
            ({"minimum": 0}, "backoff_min"),
            ({"minimum": -1}, "backoff_min"),
            ({"maximum": 0.5}, "backoff_max"),
            ({"factor": 0.5}, "backoff_factor"),
            ({"jitter": 1.0}, "jitter"),
        ],
    )
    def test_bad_options_name_the_option(self, kwargs, named):
        with pytest.raises(ConfigError, match=named):
            BackoffPolicy(**kwargs)
