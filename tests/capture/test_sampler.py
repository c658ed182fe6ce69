import pytest

from capture.errors import ConfigError
from capture.sampler import Sampler


def test_rate_is_respected_and_deterministic():
    s = Sampler(0.25)
    keys = [f"user-{i}" for i in range(20_000)]
    hits = [s.hit(k) for k in keys]
    assert 0.23 < sum(hits) / len(hits) < 0.27
    # another instance (another process, the decorator) decides the same
    assert hits == [Sampler(0.25).hit(k) for k in keys]
    # a lower rate keeps a subset of a higher one
    low = Sampler(0.1)
    assert all(h for k, h in zip(keys, hits, strict=True) if low.hit(k))


def test_salt_changes_the_selection():
    keys = [str(i) for i in range(2000)]
    a = [Sampler(0.5).hit(k) for k in keys]
    b = [Sampler(0.5, salt="x").hit(k) for k in keys]
    assert a != b


def test_edges_and_errors_and_slow():
    assert all(Sampler(1.0).hit(str(i)) for i in range(100))
    assert not any(Sampler(0.0).hit(str(i)) for i in range(100))
    s = Sampler(0.0, slow_s=0.5)
    assert s.decide("k", status=200, latency_s=0.1) is None
    assert s.decide("k", status=502) == "error"
    assert s.decide("k", error=True) == "error"
    assert s.decide("k", latency_s=0.7) == "slow"
    strict = Sampler(0.0, keep_errors=False, slow_s=None)
    assert strict.decide("k", status=500, latency_s=9) is None


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_invalid_rate(rate):
    with pytest.raises(ConfigError):
        Sampler(rate)


def test_a_rate_that_is_not_a_number_is_refused():
    # interpreted, the range check refuses it; compiled (setup.py), the
    # argument's type annotation does first
    with pytest.raises((ConfigError, TypeError)):
        Sampler("0.5")  # type: ignore[arg-type]


def test_key_setting():
    assert Sampler(0.5, key="header:X-User-Id").header == "x-user-id"
    for bad in ("user", "header:", "field:x"):
        with pytest.raises(ConfigError):
            Sampler(0.5, key=bad)


def test_errors_and_slow_ones_are_labelled_before_the_hash():
    s = Sampler(0.5, slow_s=1.0)
    keys = [f"k{i}" for i in range(400)]
    for k in keys:
        assert s.decide(k) == ("sampled" if s.hit(k) else None)
        assert s.decide(k, status=503) == s.decide(k, error=True) == "error"
        assert s.decide(k, latency_s=1.0) == "slow"
    assert Sampler(1.0).decide("k", status=500, latency_s=5.0) == "error"
    # Not kept regardless: then only the hash keeps it, and it is "sampled".
    lax = Sampler(1.0, keep_errors=False, slow_s=None)
    assert lax.decide("k", status=500, latency_s=5.0) == "sampled"
    assert lax.kept_anyway(status=500, latency_s=5.0, error=True) is None
