from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from capture.capturer import Capturer
from server.metrics import CaptureCollector
from tests.capture.test_capturer import ex
from tests.support import GatedSink


def scrape(registry):
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_capture_counters_scraped_from_a_fresh_registry(tmp_path):
    sink = GatedSink(tmp_path)
    cap = Capturer(
        sink=sink, model="ranker", sample_rate=0.5, buffer_max_bytes=2048, flush_max_bytes=1024
    )
    registry = CollectorRegistry()
    registry.register(CaptureCollector(cap.stats, model="ranker"))
    sink.gate.clear()  # hold uploads so the buffer fills and depth is visible
    for i in range(400):
        cap.submit(ex(i))
    m = scrape(registry)
    lbl = (("model", "ranker"),)
    assert m[("modeltap_capture_records_offered_total", lbl)] == 400
    kept = m[("modeltap_capture_records_kept_total", lbl)]
    assert kept + m[("modeltap_capture_records_sampled_out_total", lbl)] == 400
    full = m[
        ("modeltap_capture_records_dropped_total", (("model", "ranker"), ("reason", "buffer_full")))
    ]
    assert full > 0
    assert m[("modeltap_capture_buffer_bytes", lbl)] > 0
    sink.gate.set()
    cap.close()
    m = scrape(registry)
    assert m[("modeltap_capture_buffer_bytes", lbl)] == 0
    assert m[("modeltap_capture_records_written_total", lbl)] == kept - full
    flushes = {k[1]: v for k, v in m.items() if k[0] == "modeltap_capture_flushes_total"}
    assert sum(flushes.values()) >= 1
