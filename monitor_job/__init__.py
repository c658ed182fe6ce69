"""monitor_job: check windows of captures against the training baseline.

Entry point: ``modeltap-monitor`` (``python -m monitor_job``); see ``cli``.
Module contracts: ``DESIGN.md`` beside this file.
"""
