"""Query templates: ``{service}``, ``{version}`` ... replaced, every other brace left alone.

PromQL label matchers (``{code=~"5.."}``) and Datadog tag scopes (``{service:x}``) are full of
braces, so ``str.format`` is the wrong tool (DESIGN §3). Only ``{name}`` with a known name is
replaced, and the value is escaped for the provider's query language, so a version string cannot
break out of a label matcher.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render(template: str, values: Mapping[str, str], escape: Callable[[str], str]) -> str:
    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        return escape(values[name]) if name in values else m.group(0)

    return _PLACEHOLDER.sub(replace, template)
