"""Synthetic incidents: scenarios with a planted cause (one module per runbook), a real
Prometheus to hold them (lab), the bundled demos (demo), the recorded evidence of every case
(recording), and the check behind ``workbook test`` (check)."""
