"""The archive layer: run folders and their records, the index, retention, reports and pages.

Imports only the core layer.
"""
