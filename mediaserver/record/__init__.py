"""Recording: live streams written to crash-safe fragmented MP4 files (recorder.py), the VOD index of a
recorded file (vod.py), the catalog that lists them (catalog.py, the only SQL of the project) and the
manager that ties them to the hub (manager.py)."""
