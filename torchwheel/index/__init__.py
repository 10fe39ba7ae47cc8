"""Package indexes: PEP 691 JSON, PEP 503 HTML and ``--find-links`` locations.

``parse`` turns pages into links and wheel candidates (pure), ``cache`` keeps pages on disk,
``client`` fetches them (:class:`IndexClient`). The index knows nothing of Lambda: callers
pass the index URL (the PyTorch default lives with the facts, in ``torchwheel.targets``).
"""

from __future__ import annotations

from .cache import CachedPage, PageCache, parse_cache_control
from .client import FetchRecord, IndexClient, Page
from .parse import (
    ACCEPT,
    HTML_TYPES,
    JSON_TYPE,
    Candidate,
    Link,
    normalize_name,
    parse_html_links,
    parse_json_links,
    parse_page,
    wheel_candidates,
)

__all__ = [
    "ACCEPT",
    "HTML_TYPES",
    "JSON_TYPE",
    "CachedPage",
    "Candidate",
    "FetchRecord",
    "IndexClient",
    "Link",
    "Page",
    "PageCache",
    "normalize_name",
    "parse_cache_control",
    "parse_html_links",
    "parse_json_links",
    "parse_page",
    "wheel_candidates",
]
