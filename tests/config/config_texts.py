"""Config texts and helpers shared by the config tests."""

from __future__ import annotations

NAME = "watchdog.yaml"

VALID = """\
server:
  listen: 127.0.0.1:8080
  webhook_secrets:
    generic: a-webhook-secret
  api_tokens:
    - {name: oncall, token: "0123456789abcdef-oncall", role: operator}
store:
  url: 'sqlite:///:memory:'
providers:
  prom: {type: prometheus, url: "http://127.0.0.1:9090"}
rollback:
  hook: {type: http, url: "https://ci.example/rollback"}
notify:
  slack: {type: slack, webhook_url: "https://hooks.slack.com/services/T0/B0/XXXX"}
policies:
  - name: checkout-prod
    match: {service: checkout, environment: prod}
    bake: 30m
    interval: 30s
    rollback: hook
    notify: [slack]
    checks:
      - name: errors
        type: ratio
        provider: prom
        bad: 'sum(increase(http_requests_total{service="{service}",code=~"5.."}[{interval}]))'
        total: 'sum(increase(http_requests_total{service="{service}"}[{interval}]))'
        compare: baseline
        critical: true
"""


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based number of the line holding the ``occurrence``-th ``needle`` in ``text``."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in the config text")
