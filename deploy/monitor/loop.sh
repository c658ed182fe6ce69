#!/bin/sh
# The monitor job on a schedule, for the compose stack: the proxy's image with
# this script as its entry point (Kubernetes runs it as a CronJob instead:
# deploy/k8s/monitor-cronjob.yaml).
#
# After MONITOR_BASELINE_AFTER_S of traffic it builds the baseline from that
# known-good window of captures (a real deployment would rather build it from
# training data: modeltap-monitor baseline --data ...), then every
# MONITOR_EVERY_S checks the last MONITOR_WINDOW of captures against it,
# writes the report under MONITOR_REPORTS and pushes the metrics to
# MONITOR_PUSHGATEWAY. S3 settings: MODELTAP_S3_ENDPOINT_URL and AWS_*.
set -u
: "${MONITOR_CAPTURES:?}" "${MONITOR_BASELINE:?}" "${MONITOR_REPORTS:?}" "${MONITOR_MODEL:?}"
every="${MONITOR_EVERY_S:-300}"
window="${MONITOR_WINDOW:-5m}"

iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

started=$(date +%s)
sleep "${MONITOR_BASELINE_AFTER_S:-600}"
until modeltap-monitor baseline --captures "$MONITOR_CAPTURES" --model "$MONITOR_MODEL" \
        --start "$(iso "$started")" --end "$(iso "$(date +%s)")" --out "$MONITOR_BASELINE"; do
    echo "monitor: no baseline yet (no captures?); retrying in 60 s" >&2
    sleep 60
done

while :; do
    now=$(date +%s)
    modeltap-monitor run --captures "$MONITOR_CAPTURES" --baseline "$MONITOR_BASELINE" \
        --model "$MONITOR_MODEL" --window "$window" --end "$(iso "$now")" \
        --out "$MONITOR_REPORTS/$(iso "$now")" \
        ${MONITOR_PUSHGATEWAY:+--pushgateway "$MONITOR_PUSHGATEWAY"}
    echo "monitor: run exited $? (0 clean, 1 violations, 2 failed); next in ${every} s"
    sleep "$every"
done
