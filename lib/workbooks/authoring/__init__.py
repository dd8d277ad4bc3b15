"""Writing runbooks: the fixed cells every notebook shares (skeleton), ``workbook new`` (new) and
``workbook lint`` (lint)."""
