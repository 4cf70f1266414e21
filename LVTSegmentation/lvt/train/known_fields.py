"""One message for a misspelt config field, so a typo fails loudly instead of being silently ignored."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def unknown_fields_problem(given: Iterable[object], known: Iterable[str]) -> str | None:
    """None when every given field is known; else a message naming the unknown ones and the closest known ones.

    ``["feature_per_stage"]`` against ``["features_per_stage", "norm"]`` gives "unknown field(s)
    feature_per_stage (did you mean 'features_per_stage'?); known fields: features_per_stage, norm".
    """
    known = sorted(known)
    unknown = sorted({str(name) for name in given} - set(known))
    if not unknown:
        return None
    guesses = [repr(close[0]) for name in unknown if (close := difflib.get_close_matches(name, known, n=1))]
    hint = f" (did you mean {' or '.join(guesses)}?)" if guesses else ""
    return f"unknown field(s) {', '.join(unknown)}{hint}; known fields: {', '.join(known)}"
