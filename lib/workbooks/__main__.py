"""``python -m workbooks``: the same as the ``workbook`` command."""

from workbooks.cli import main

main(prog_name="workbook")
