"""Running workbooks: routing alerts to runbooks, papermill runs, workbooks opened by hand."""
