"""Per-runbook investigation steps: what each notebook cell calls after its query.

One module per runbook; each step takes the :class:`~workbooks.notebook.incident.Incident` and the
query
results the cell fetched, charts them, and records findings. The notebooks stay thin and their
queries stay visible and editable in the cells.
"""
