"""Who may publish and watch: signed tokens (tokens.py), per-app rules, stream keys and blocks (policy.py),
admission limits (limits.py), what webhooks are asked and what their answers mean (hooks.py), and the
bundle listeners consult (admission.py). Pure: stdlib only, no IO, no sleeping; callers pass the time."""
