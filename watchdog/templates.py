"""Query templates: ``{service}``, ``{version}`` ... replaced, every other brace left alone.

PromQL label matchers (``{code=~"5.."}``) and Datadog tag scopes (``{service:x}``) are full of
braces, so ``str.format`` is the wrong tool (DESIGN §3). Only ``{name}`` with a known name is
replaced, and the value is escaped for the provider's query language, so a version string cannot
break out of a label matcher.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@functools.lru_cache(maxsize=4096)
def _pieces(template: str) -> tuple[str, ...]:
    """``template`` split into literal text and placeholder names, alternating: literals at even
    indexes, names at odd ones. Parsed once per template: a Watch renders the same few templates on
    every poll, and ``replay`` on every poll of thousands of recordings."""
    return tuple(_PLACEHOLDER.split(template))


def render(template: str, values: Mapping[str, str], escape: Callable[[str], str]) -> str:
    pieces = _pieces(template)
    if len(pieces) == 1:
        return template
    out = [pieces[0]]
    for i in range(1, len(pieces), 2):
        name = pieces[i]
        out.append(escape(values[name]) if name in values else "{" + name + "}")
        out.append(pieces[i + 1])
    return "".join(out)
