import pytest

from capture.errors import ConfigError
from capture.settings import CaptureSettings


def test_defaults_are_valid():
    s = CaptureSettings()
    assert s.sink == "./captures" and s.sample_rate == 1.0 and s.spool_dir is None


def test_from_env_parses_every_kind():
    env = {
        "MODELTAP_SINK": "s3://b/p",
        "MODELTAP_SAMPLE_RATE": "0.25",
        "MODELTAP_FLUSH_MAX_RECORDS": "5_000",
        "MODELTAP_SAMPLE_KEEP_ERRORS": "no",
        "MODELTAP_SLOW_THRESHOLD_S": "",
        "MODELTAP_REDACT_FIELDS": "email, ssn,",
        "MODELTAP_UPSTREAM_URL": "http://x",  # a server setting: ignored here
        "OTHER": "1",
    }
    s = CaptureSettings.from_env(env)
    assert s.sink == "s3://b/p" and s.sample_rate == 0.25 and s.flush_max_records == 5000
    assert s.sample_keep_errors is False and s.slow_threshold_s is None
    assert s.redact_fields == ("email", "ssn")
    assert CaptureSettings.from_env(env, model="x").model == "x"


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("MODELTAP_SAMPLE_RATE", "lots", "MODELTAP_SAMPLE_RATE"),
        ("MODELTAP_SAMPLE_RATE", "1.5", "sample rate"),
        ("MODELTAP_FLUSH_MAX_RECORDS", "0", "max_records"),
        ("MODELTAP_CAPTURE_BODIES", "maybe", "MODELTAP_CAPTURE_BODIES"),
        ("MODELTAP_REDACT_MODE", "hash", "MODELTAP_REDACT_KEY"),
        ("MODELTAP_MODEL", "../etc", "model"),
        ("MODELTAP_S3_MAX_ATTEMPTS", "0", "MODELTAP_S3_MAX_ATTEMPTS"),
        ("MODELTAP_S3_CONNECT_TIMEOUT_S", "-1", "MODELTAP_S3_CONNECT_TIMEOUT_S"),
        ("MODELTAP_S3_READ_TIMEOUT_S", "0", "MODELTAP_S3_READ_TIMEOUT_S"),
    ],
)
def test_bad_values_fail_at_start_naming_the_setting(var, value, named):
    with pytest.raises(ConfigError, match=named):
        CaptureSettings.from_env({var: value, "MODELTAP_REDACT_FIELDS": "x"})
