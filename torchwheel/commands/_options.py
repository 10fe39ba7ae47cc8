"""Command-line options shared by the commands that read a package index.

``--index-url``, ``--extra-index-url``, ``--find-links``, ``--no-index``, ``--offline``,
``--cache-dir`` and ``--no-cache``, with their ``TORCHWHEEL_*`` environment defaults, and the
:class:`~torchwheel.index.IndexClient` they describe.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..errors import InputError
from ..http import cache_root
from ..index import IndexClient
from ..resolution import DEFAULT_INDEX_URL

__all__ = [
    "IndexSettings",
    "add_index_arguments",
    "index_client_from_args",
    "index_settings_from_args",
]


def _env_list(var: str) -> list[str]:
    return os.environ.get(var, "").split()


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    """``--index-url``, ``--extra-index-url``, ``--find-links``, ``--no-index``, ``--offline``,
    ``--cache-dir``, ``--no-cache`` (defaults from ``TORCHWHEEL_*`` environment variables)."""
    g = p.add_argument_group("package index")
    g.add_argument(
        "--index-url",
        metavar="URL",
        default=None,
        help=f"PEP 503/691 index (default $TORCHWHEEL_INDEX_URL or {DEFAULT_INDEX_URL})",
    )
    g.add_argument(
        "--extra-index-url",
        metavar="URL",
        action="append",
        default=None,
        help="another index to read too (repeatable; $TORCHWHEEL_EXTRA_INDEX_URL, space-separated)",
    )
    g.add_argument(
        "--find-links",
        metavar="PATH|URL",
        action="append",
        default=None,
        help="a directory of wheels or an HTML page of links (repeatable; "
        "$TORCHWHEEL_FIND_LINKS, space-separated)",
    )
    g.add_argument("--no-index", action="store_true", help="ignore indexes; use --find-links only")
    g.add_argument("--offline", action="store_true", help="use only cached index pages; no network")
    g.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="index page cache (default $TORCHWHEEL_CACHE_DIR or the user cache directory)",
    )
    g.add_argument("--no-cache", action="store_true", help="do not read or write the page cache")


@dataclass
class IndexSettings:
    """The index options after defaults and environment variables are applied."""

    index_url: str
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    no_index: bool = False
    offline: bool = False
    cache_dir: Path | None = None


def index_settings_from_args(args: argparse.Namespace) -> IndexSettings:
    """Combine command-line options and ``TORCHWHEEL_*`` environment variables."""
    index_url = getattr(args, "index_url", None) or os.environ.get(
        "TORCHWHEEL_INDEX_URL", DEFAULT_INDEX_URL
    )
    extra = getattr(args, "extra_index_url", None)
    links = getattr(args, "find_links", None)
    no_cache = bool(getattr(args, "no_cache", False))
    cache_dir = getattr(args, "cache_dir", None)
    return IndexSettings(
        index_url=index_url.strip(),
        extra_index_urls=list(extra)
        if extra is not None
        else _env_list("TORCHWHEEL_EXTRA_INDEX_URL"),
        find_links=list(links) if links is not None else _env_list("TORCHWHEEL_FIND_LINKS"),
        no_index=bool(getattr(args, "no_index", False)),
        offline=bool(getattr(args, "offline", False)),
        cache_dir=None if no_cache else (cache_dir or cache_root()),
    )


def index_client_from_args(
    args: argparse.Namespace, client: httpx.Client | None = None
) -> IndexClient:
    """An :class:`IndexClient` configured from :func:`add_index_arguments` options."""
    s = index_settings_from_args(args)
    if s.offline and s.cache_dir is None:
        raise InputError("--offline needs the page cache; drop --no-cache")
    return IndexClient(
        s.index_url,
        s.extra_index_urls,
        s.find_links,
        no_index=s.no_index,
        client=client,
        cache_dir=s.cache_dir,
        offline=s.offline,
        default_index_url=DEFAULT_INDEX_URL,
    )
