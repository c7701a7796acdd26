"""openpi's own policy object, served by the project's policy server (vla/server.py).

openpi's `scripts/serve_policy.py` serves a trained `openpi.policies.policy.Policy` one
request at a time. Wrapped in OpenpiPolicy, the same object is served by PolicyServer:
in batches when it offers `infer_batch` (openpi's proposed batched inference), one request
at a time otherwise, behind the wire perimeter (safe decoder, API key, frame limit), to
the same openpi clients. openpi is imported only by `load_openpi`, so the adapter also
wraps anything with openpi's `infer(obs: dict) -> dict` where openpi is not installed.
"""

from __future__ import annotations

from typing import Any


class OpenpiPolicy:
    """An openpi policy (`infer`, optionally `reset`, `infer_batch`, `metadata`) as a
    VLAPolicy; it offers infer_batch exactly when the wrapped policy does."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        if callable(getattr(policy, "infer_batch", None)):
            self.infer_batch = policy.infer_batch

    @property
    def metadata(self) -> dict[str, Any]:
        """What openpi's server announces for this policy (its `metadata`, if any)."""
        return dict(getattr(self.policy, "metadata", None) or {})

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        return self.policy.infer(obs)

    def reset(self) -> None:
        reset = getattr(self.policy, "reset", None)
        if callable(reset):
            reset()


def load_openpi(config_name: str, checkpoint: str) -> OpenpiPolicy:
    """A trained openpi policy (e.g. pi05_libero and gs://openpi-assets/checkpoints/
    pi05_libero), loaded as openpi's serve_policy.py loads it."""
    try:
        from openpi.policies import policy_config
        from openpi.training import config as openpi_config
    except ImportError as exc:
        raise ValueError(f"--policy openpi needs openpi installed ({exc})") from None
    train_config = openpi_config.get_config(config_name)
    return OpenpiPolicy(policy_config.create_trained_policy(train_config, checkpoint))
