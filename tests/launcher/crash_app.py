"""An app module whose import fails, for the run-mode crash-loop test."""

raise RuntimeError("crash_app fails on import on purpose")
