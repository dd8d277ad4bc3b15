"""Synthetic incidents: scenarios with a planted cause, a real Prometheus to hold them, the
demos."""
