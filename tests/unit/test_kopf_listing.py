"""kopf lists the Checkouts in pages, not in one answer.

By default kopf asks for every object at once and parses the whole answer: with
10,700 ended Checkouts waiting for their TTL delete, a restarted operator went from
90 to 430 MiB within three seconds, 186 MiB of it that one parsed list (memray), and
stayed at 396 MiB. Paged, the same restart with 17,400 stayed under 300 MiB
(docs/performance.md, "Session 7")."""

from __future__ import annotations

from checkout_operator.clients.kube import LIST_PAGE
from checkout_operator.handlers import kopf_settings


def test_kopf_lists_in_pages_of_list_page() -> None:
    settings = kopf_settings()
    assert settings.watching.chunk_size == LIST_PAGE
    assert 0 < LIST_PAGE <= 1000


def test_kopf_posts_no_events_of_its_own() -> None:
    # The saga posts one Event per phase change (issue 12: at most 2 per checkout).
    assert kopf_settings().posting.enabled is False
