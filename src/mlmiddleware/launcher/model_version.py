"""``mlmiddleware model-version``: the newest git tag matching a pattern, for CI scripts."""

from __future__ import annotations

import subprocess

__all__ = ["DEFAULT_PATTERN", "ModelVersionError", "newest_tag"]

DEFAULT_PATTERN = "model-v*"


class ModelVersionError(RuntimeError):
    """Missing git, repository or matching tag; the message names which and what to do."""


def newest_tag(pattern: str = DEFAULT_PATTERN, *, repository: str = ".") -> str:
    """Return the newest tag matching the glob ``pattern``, in git's version sort order.

    Version sort compares the numbers in tags numerically, so ``model-v1.10`` is newer than
    ``model-v1.9``. Raises ``ModelVersionError`` when git is missing, ``repository`` is not
    inside a git repository, or no tag matches.
    """
    command = ["git", "-C", repository, "tag", "--list", pattern, "--sort=-version:refname"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ModelVersionError("git not found: install git or add it to PATH") from None

    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()
        reason = detail[-1] if detail else f"git exited with status {result.returncode}"
        if "not a git repository" in result.stderr:
            raise ModelVersionError(
                f"{repository!r} is not inside a git repository: run the command in the "
                "repository or pass --repo"
            )
        raise ModelVersionError(f"git tag failed in {repository!r}: {reason}")

    tags = result.stdout.split()
    if not tags:
        raise ModelVersionError(
            f"no git tag matches {pattern!r} in {repository!r}: fetch tags (git fetch --tags), "
            "create one "
            f"(git tag {pattern.replace('*', '1.0.0')}) or pass another --pattern"
        )
    return tags[0]
