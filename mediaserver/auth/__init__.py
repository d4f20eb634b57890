"""Who may publish and watch: the stream-name rule (names.py), signed tokens and bearer credentials
(tokens.py), per-app rules, stream keys and blocks (policy.py), admission limits (limits.py), which web
origins may read the answers (cors.py), what webhooks are asked and what their answers mean (hooks.py),
and the bundle listeners consult (admission.py). Pure: stdlib only, no IO, no sleeping; callers pass the
time. The asynchronous side (waiting for a webhook, a cluster claim, a pull) is mediaserver/gate.py."""
