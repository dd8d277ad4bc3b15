"""The notebook side: the incident facade, sources, the query catalog, analysis and charts.

Imports the core and archive layers (an incident's notes go to the archive).
"""
