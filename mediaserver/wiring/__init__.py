"""The composition root (cli.py) in parts: each builds one concern of a running server from the config."""
