"""Recording: live streams written to fragmented MP4 files, and the VOD index of a recorded file."""
