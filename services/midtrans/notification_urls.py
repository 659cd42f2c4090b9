"""Per-transaction notification URLs: Midtrans' ``X-Override-Notification`` and
``X-Append-Notification`` request headers.

A Snap request may carry either header with up to three comma-separated http(s) URLs.
Override replaces the dashboard's Payment Notification URL for that transaction; append
adds to it; when both are sent, override wins. One Midtrans account can then serve
several deployments (staging, a per-test listener) without touching its dashboard.
"""

from __future__ import annotations

from urllib.parse import urlsplit

OVERRIDE_HEADER = "X-Override-Notification"
APPEND_HEADER = "X-Append-Notification"
MAX_URLS = 3
MAX_URL_LENGTH = 255


def parse_urls(value: str, *, what: str = OVERRIDE_HEADER) -> tuple[str, ...]:
    """The URLs of one header value; ValueError naming the problem."""
    urls = tuple(part.strip() for part in value.split(",") if part.strip())
    if not urls:
        raise ValueError(f"{what}: no URL given")
    if len(urls) > MAX_URLS:
        raise ValueError(f"{what}: at most {MAX_URLS} URLs, got {len(urls)}")
    for url in urls:
        if len(url) > MAX_URL_LENGTH:
            raise ValueError(f"{what}: a URL is longer than {MAX_URL_LENGTH} characters")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{what}: {url!r} is not an http(s) URL")
    return urls


def notification_targets(
    dashboard_url: str | None, override: str | None, append: str | None
) -> tuple[str, ...]:
    """Where a transaction's notifications go, given the two headers as sent (or None)."""
    if override is not None:
        return parse_urls(override, what=OVERRIDE_HEADER)
    base = (dashboard_url,) if dashboard_url else ()
    if append is not None:
        return base + tuple(u for u in parse_urls(append, what=APPEND_HEADER) if u not in base)
    return base
