"""Audits of crews and runs: bias probes, adversarial suites, replay, failures, metrics.

Each report is kept in the run store beside the runs it made (``report``). Audits
run crews through the runtime, so they import it and everything under it; only the
interfaces (the CLI, the monitor, the portal) import them.
"""
