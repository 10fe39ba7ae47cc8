"""The one home for HTTP: client factory, GET with retries, ``file://`` rules, hash fragments.

Every ``httpx.Client`` torchwheel creates comes from :func:`make_client` (timeouts,
``User-Agent: torchwheel/<version>``, redirects followed up to :data:`MAX_REDIRECTS`); callers
may inject their own client instead. :func:`get_with_retries` is the one retry loop: 429 and
5xx answers and dropped connections are retried with exponential backoff (``backoff``,
``2*backoff``, ...), a ``Retry-After`` header (seconds or an HTTP date) is honoured up to
:data:`MAX_RETRY_AFTER` seconds, a refused connection or unknown host is retried once only,
404/410 raise :class:`NotFound` and every other failure a one-line
:class:`~torchwheel.errors.NetworkError` naming the URL.

Also here: ``file://`` URL ↔ path (:func:`file_url_path` refuses remote hosts),
``#sha256=`` fragments (:func:`split_hash_fragment`) and the cache root (:func:`cache_root`).
This module knows nothing of Lambda or of package indexes.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import os
import re
import time
from collections.abc import Callable, Container, Mapping
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx
import platformdirs

from . import __version__
from .errors import InputError, NetworkError, NotFound

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "MAX_REDIRECTS",
    "MAX_RETRY_AFTER",
    "RETRY_STATUS",
    "USER_AGENT",
    "NotFound",
    "cache_root",
    "file_url_path",
    "get_with_retries",
    "local_path",
    "make_client",
    "parse_retry_after",
    "path_url",
    "retry_delay",
    "split_hash_fragment",
]

USER_AGENT = f"torchwheel/{__version__}"
#: Read/write/pool timeout in seconds (a slow mirror may pause between chunks).
DEFAULT_TIMEOUT = 60.0
#: Connect timeout in seconds: a host that does not answer within this will not.
CONNECT_TIMEOUT = 10.0
#: Redirects followed per request (the PyTorch index redirects once, to its CDN).
MAX_REDIRECTS = 10
#: Answers worth asking again: rate limited or a server-side failure.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: Longest ``Retry-After`` wait honoured, in seconds (a longer one is cut to this).
MAX_RETRY_AFTER = 30.0

_SHA256_FRAGMENT = re.compile(r"(?:^|&)sha256=([0-9a-fA-F]{64})(?:&|$)")


def make_client(timeout: float = DEFAULT_TIMEOUT) -> httpx.Client:
    """A new ``httpx.Client``: ``timeout`` (connect at most :data:`CONNECT_TIMEOUT`),
    redirects followed (at most :data:`MAX_REDIRECTS`), ``User-Agent: torchwheel/<version>``.
    The caller closes it."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        headers={"User-Agent": USER_AGENT},
    )


# -- retries ---------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` → seconds to wait (>= 0), or None when absent or unreadable.

    Both forms of RFC 9110 §10.2.3: delay-seconds (``120``) and an HTTP date
    (``Wed, 21 Oct 2015 07:28:00 GMT``, counted from ``now``, default the current time).
    """
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"[0-9]+", text):
        return float(int(text)) if len(text) <= 12 else math.inf
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as such
        when = when.replace(tzinfo=datetime.timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def retry_delay(
    attempt: int,
    backoff: float,
    retry_after: str | None = None,
    *,
    now: float | None = None,
    cap: float = MAX_RETRY_AFTER,
) -> float:
    """Seconds to wait before retry number ``attempt + 1``.

    Exponential backoff (``backoff * 2**attempt``), or the server's ``Retry-After`` when that
    asks for longer, cut to ``cap`` seconds.
    """
    delay = backoff * (2**attempt) if backoff > 0 else 0.0
    asked = parse_retry_after(retry_after, now=now)
    if asked is not None:
        delay = max(delay, min(asked, cap))
    return delay


def _detail(exc: Exception) -> str:
    """The first line of an exception's text (its class name when it has none)."""
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


def _retry_limit(exc: httpx.TransportError, retries: int) -> int:
    """Retries worth making after ``exc``: a URL httpx cannot fetch never works, a refused
    connection or unknown host will not heal in a second (one retry), a dropped one may."""
    if isinstance(exc, httpx.UnsupportedProtocol):
        return 0
    if isinstance(exc, httpx.ConnectError):
        return min(1, retries)
    return retries


def _send(
    client: httpx.Client, url: str, headers: Mapping[str, str] | None, stream: bool
) -> httpx.Response:
    request = client.build_request("GET", url, headers=headers)
    return client.send(request, stream=stream, follow_redirects=True)


def get_with_retries(
    client: httpx.Client,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    retries: int = 3,
    backoff: float = 0.2,
    stream: bool = False,
    accept_status: Container[int] = (),
    unreachable: Callable[[str], str] | None = None,
    on_attempt: Callable[[], None] | None = None,
) -> httpx.Response:
    """GET ``url`` through ``client``, retrying what may heal (see the module docstring).

    Returns the answer when its status is 2xx, 304 or in ``accept_status`` (with ``stream``
    the caller reads and closes it). Raises :class:`NotFound` for 404/410 and
    :class:`~torchwheel.errors.NetworkError` otherwise: ``"<url>: HTTP 502 Bad Gateway after
    3 attempts"``, or for a connection that cannot be made ``unreachable(detail)`` (default
    ``"<url>: cannot connect (<detail>)"``). ``on_attempt`` runs before every request (to
    count them, or to raise when a budget is spent).
    """
    attempt = 0
    while True:
        if on_attempt is not None:
            on_attempt()
        try:
            resp = _send(client, url, headers, stream)
        except httpx.TooManyRedirects:
            raise NetworkError(f"{url}: more than {client.max_redirects} redirects") from None
        except httpx.InvalidURL as exc:
            raise InputError(f"{url}: not a valid URL ({_detail(exc)})") from None
        except httpx.TransportError as exc:
            if attempt < _retry_limit(exc, retries):
                time.sleep(retry_delay(attempt, backoff))
                attempt += 1
                continue
            detail = _detail(exc)
            message = unreachable(detail) if unreachable else f"{url}: cannot connect ({detail})"
            raise NetworkError(message) from None
        status = resp.status_code
        if status in RETRY_STATUS and attempt < retries:
            delay = retry_delay(attempt, backoff, resp.headers.get("retry-after"))
            resp.close()
            time.sleep(delay)
            attempt += 1
            continue
        if status < 300 or status == 304 or status in accept_status:
            return resp
        resp.close()
        if status in (404, 410):
            raise NotFound(url, status, resp.reason_phrase)
        extra = f" after {attempt + 1} attempts" if attempt else ""
        raise NetworkError(f"{url}: HTTP {status} {resp.reason_phrase}{extra}")


# -- file:// URLs and fragments ----------------------------------------------------------------


def file_url_path(url: str) -> Path:
    """``file:///tmp/a%20b.whl`` → ``Path("/tmp/a b.whl")``; a remote host is refused
    (:class:`~torchwheel.errors.InputError`)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InputError(f"{url}: file URLs on remote hosts are not supported")
    return Path(url2pathname(parts.path))


def local_path(location: str) -> Path | None:
    """The local file a location names (a ``file://`` URL or a plain path), or None for a
    remote URL (``http://``, ``https://``, ...)."""
    if location.startswith("file:"):
        return file_url_path(location)
    if "://" in location:
        return None
    return Path(location)


def path_url(path: str | os.PathLike[str]) -> str:
    """The absolute ``file://`` URL of a local path."""
    return Path(path).resolve().as_uri()


def split_hash_fragment(url: str) -> tuple[str, str | None]:
    """``…whl#sha256=ABC…`` → (``…whl``, ``abc…``); the hash is None when the fragment
    carries no 64-hex-digit ``sha256=`` (other fragment parameters are ignored)."""
    base, _, fragment = url.partition("#")
    m = _SHA256_FRAGMENT.search(fragment)
    return base, (m.group(1).lower() if m else None)


# -- the cache -----------------------------------------------------------------------------------


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$TORCHWHEEL_CACHE_DIR``, else the per-user
    cache directory (``platformdirs``, as pip and uv pick it)."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("TORCHWHEEL_CACHE_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_cache_dir("torchwheel", appauthor=False))
