"""Full-traffic profiles through a real proxy: every request in the profile,
only the sample in the records."""

from pathlib import Path

import httpx

from capture.profile import DatasetProfile
from capture.traffic import PROFILE_SUFFIX
from tests.server.conftest import run_proxy
from tests.server.test_admin import scrape
from tests.support import all_records, wait_for


def test_proxy_profiles_all_traffic_and_samples_records(model_url: str, tmp_path: Path) -> None:
    sink = tmp_path / "captures"
    with (
        run_proxy(model_url, sink, sample_rate=0.1, profile_all=True, admin_token="t0ken") as p,
        httpx.Client(base_url=p.url) as client,
    ):
        for i in range(200):
            r = client.post("/v1/models/toy:predict", json={"instances": [[i / 10]]})
            assert r.status_code == 200
        assert wait_for(lambda: p.app.capturer.stats.get("offered") == 200)
        flushed = client.post("/_modeltap/flush", headers={"Authorization": "Bearer t0ken"})
        assert flushed.status_code == 200
        m = scrape(p.url)
    assert m[("modeltap_capture_profiled_total", (("model", "toy"),))] == 200
    total = DatasetProfile()
    for path in sink.rglob("*" + PROFILE_SUFFIX):
        total.merge(DatasetProfile.from_bytes(path.read_bytes()))
    assert total.rows == 200
    (feature,) = [c for n, c in total.columns.items() if n not in ("prediction", "model.version")]
    assert (feature.count, feature.min, feature.max) == (200, 0.0, 19.9)
    assert 5 < len(all_records(sink)) < 45
