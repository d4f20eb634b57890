"""The composition root's access part: who may publish and play (the AccessPolicy from [auth] and the
environment), webhooks, limits, and the admin token."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..auth.admission import Admission
from ..auth.limits import Limits
from ..auth.policy import AccessPolicy
from ..config import Config, ConfigError
from ..edge.webhooks import WebhookClient
from ..errors import UsageError
from ..log import event

log = logging.getLogger("mediaserver")


def build_policy(config: Config, environ: Mapping[str, str]) -> AccessPolicy:
    auth = config.auth
    try:
        policy = AccessPolicy.from_settings(
            publish_open=auth.publish_open, play_open=auth.play_open, token_secret_env=auth.token_secret_env,
            stream_keys=auth.stream_keys, environ=environ,
        )
    except UsageError as err:
        raise ConfigError(str(err)) from err
    problems = policy.problems()
    if problems:
        raise ConfigError("; ".join(problems) + f"; export {auth.token_secret_env}=<a secret of 16+ characters>")
    return policy


def build_admission(config: Config, environ: Mapping[str, str]) -> tuple[Admission, WebhookClient | None]:
    limits = config.limits
    hooks = WebhookClient(config.webhooks, environ)
    admission = Admission(
        policy=build_policy(config, environ),
        limits=Limits(limits.max_connections_per_ip, limits.max_publishers_per_app, limits.max_viewers_per_stream),
        hooks=hooks if hooks.enabled else None,
        failure_delay_s=config.auth.failure_delay_ms / 1000,
    )
    return admission, hooks if hooks.enabled else None


def admin_token(config: Config, environ: Mapping[str, str]) -> str | None:
    token = environ.get(config.api.token_env, "").strip()
    if token and len(token) < 16:
        raise ConfigError(f"${config.api.token_env} is {len(token)} characters; the admin token needs at least 16, "
                          "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    if not token and not config.api.metrics_public:
        raise ConfigError(f"api.metrics_public = false guards /metrics with the admin token, but "
                          f"${config.api.token_env} is not set")
    return token or None


def log_access(config: Config, policy: AccessPolicy, hooks: WebhookClient | None, token: str | None) -> None:
    event(
        log, "access",
        publish_open=",".join(sorted(policy.publish_open)) or "none",
        play_open=",".join(sorted(policy.play_open)) or "none",
        tokens="on" if policy.can_mint else "off", stream_keys=len(config.auth.stream_keys),
        webhooks=",".join(k for k, v in hooks.urls.items() if v) if hooks else "none",
        admin_api="on" if token else f"off (set {config.api.token_env})",
    )
