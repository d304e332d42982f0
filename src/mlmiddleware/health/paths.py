"""``HealthPaths``: where ``instrument()`` mounts the probe routes."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HealthPaths"]


@dataclass(frozen=True, kw_only=True, slots=True)
class HealthPaths:
    """Paths of the probe routes; ``None`` leaves that route out.

    ``open_inference_aliases`` also mounts ``/v2/health/live`` and ``/v2/health/ready``,
    the health routes of the Open Inference Protocol (KServe V2 protocol).
    """

    live: str | None = "/livez"
    ready: str | None = "/readyz"
    startup: str | None = "/startupz"
    open_inference_aliases: bool = True

    def __post_init__(self) -> None:
        for name in ("live", "ready", "startup"):
            path = getattr(self, name)
            if path is None:
                continue
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(
                    f"invalid HealthPaths {name}={path!r}: use a path starting with '/', "
                    "or None to leave the route out"
                )
