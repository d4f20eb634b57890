<<<<<<< HEAD
"""Recording: live streams written to fragmented MP4 files, and the VOD index of a recorded file."""
=======
"""Recording: crash-safe files of live streams, and the catalog that lists them (catalog.py)."""
>>>>>>> r/catalog
