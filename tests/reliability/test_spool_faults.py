"""The spool fails while S3 is down, under load, in the real proxy process:
full (``MODELTAP_SPOOL_MAX_BYTES`` reached) or unwritable (its directory
replaced by a file, as when a volume goes away; chmod cannot stop root, who
runs these tests). Drops are counted with their reason, ``readyz`` says what
is wrong (the proxy stays ready for traffic; ``?strict=true`` is not), every
client request is still answered, and once the spool and S3 are back the
capture is "ok" again."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest

from loadtest.harness import SteadyLoad, capture_counts, s3_env
from tests.support import wait_for


@pytest.mark.parametrize(("fault", "reason"), [("full", "spool_full"), ("gone", "spool_error")])
def test_spool_full_or_unwritable_is_counted_reported_and_survived(
    toy_model, start_proxy, s3_bucket, s3_proxy, tmp_path, fault, reason
):
    spool = tmp_path / "spool"
    proxy = start_proxy(
        {
            "MODELTAP_UPSTREAM_URL": toy_model.url,
            "MODELTAP_MODEL": "toy",
            "MODELTAP_FLUSH_MAX_AGE_S": "0.3",
            "MODELTAP_SPOOL_DIR": str(spool),
            "MODELTAP_SPOOL_MAX_BYTES": "20000" if fault == "full" else str(1 << 30),
            "MODELTAP_SPOOL_REPLAY_S": "0.3",
            **s3_env(s3_proxy.url, s3_bucket),
        }
    )
    ready = httpx.get(proxy.url + "/_modeltap/readyz").json()
    assert ready["ready"] and ready["checks"]["spool"].startswith("writable"), ready
    s3_proxy.down()
    if fault == "gone":
        shutil.rmtree(spool)
        spool.write_text("not a directory any more")
    with SteadyLoad(proxy.url, 100) as load:
        assert wait_for(lambda: capture_counts(proxy.metrics())["dropped"].get(reason, 0) > 0, 30)
        r = httpx.get(proxy.url + "/_modeltap/readyz")
        strict = httpx.get(proxy.url + "/_modeltap/readyz", params={"strict": "true"})
        time.sleep(0.5)
    results = load.snapshot()
    assert results and all(x.status == 200 for x in results)  # clients never noticed
    assert httpx.get(proxy.url + "/_modeltap/healthz").status_code == 200
    # still ready for traffic (capture trouble must not pull the proxy out
    # of a load balancer), degraded, and not ready when asked strictly
    assert r.status_code == 200 and r.json()["capture"] == "degraded"
    assert strict.status_code == 503 and strict.json()["checks"] == r.json()["checks"]
    spool_check = r.json()["checks"]["spool"]
    assert spool_check.startswith("not writable") and (
        "full" in spool_check if fault == "full" else "Not a directory" in spool_check
    ), spool_check
    if fault == "gone":
        spool.unlink()
        spool.mkdir()
    s3_proxy.up()

    def ready_again() -> bool:
        r = httpx.get(proxy.url + "/_modeltap/readyz", params={"strict": "true"})
        return r.status_code == 200 and r.json()["capture"] == "ok"

    assert wait_for(ready_again, 30)
    c = capture_counts(proxy.metrics())
    assert c["records_offered"] == len(results) == c["records_kept"]
    assert proxy.stop() == 0
    assert reason in proxy.log() or "dropped" in proxy.log()
