"""Recording: crash-safe files of live streams, and the catalog that lists them (catalog.py)."""
