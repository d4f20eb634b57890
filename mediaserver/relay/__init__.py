"""Relays: streams pulled in from URLs (pull.py) and pushed out to other servers."""
