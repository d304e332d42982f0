"""Sentences written for the demo: paraphrase pairs, and sentences unrelated to them."""

from __future__ import annotations

PARAPHRASES = [
    (
        "The train to Lyon leaves at nine tomorrow morning.",
        "Tomorrow the Lyon train departs at 9 am.",
    ),
    ("Please restart the server before the upgrade.", "Reboot the machine prior to upgrading it."),
    ("The cat is sleeping on the warm windowsill.", "A cat naps on the sunny window ledge."),
    (
        "Our quarterly revenue grew by twelve percent.",
        "Sales this quarter rose 12% over the last one.",
    ),
    (
        "He forgot his umbrella and got soaked in the rain.",
        "Having left his umbrella behind, he was drenched by the rain.",
    ),
]

UNRELATED = [
    (
        "The train to Lyon leaves at nine tomorrow morning.",
        "Our quarterly revenue grew by twelve percent.",
    ),
    ("Please restart the server before the upgrade.", "A cat naps on the sunny window ledge."),
    ("The cat is sleeping on the warm windowsill.", "Tomorrow the Lyon train departs at 9 am."),
    (
        "Our quarterly revenue grew by twelve percent.",
        "Having left his umbrella behind, he was drenched by the rain.",
    ),
    (
        "He forgot his umbrella and got soaked in the rain.",
        "Reboot the machine prior to upgrading it.",
    ),
]


def all_sentences() -> list[str]:
    """Return every distinct sentence of the pairs, in a stable order."""
    seen: dict[str, None] = {}
    for first, second in PARAPHRASES + UNRELATED:
        seen.setdefault(first)
        seen.setdefault(second)
    return list(seen)
