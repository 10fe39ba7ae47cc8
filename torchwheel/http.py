"""The one home for HTTP: client factory, GET with retries, ``file://`` rules, hash fragments.

Every ``httpx.Client`` torchwheel creates comes from :func:`make_client` (timeouts,
``User-Agent: torchwheel/<version>``, redirects followed up to :data:`MAX_REDIRECTS`); callers
may inject their own client instead. :func:`get_with_retries` is the one retry loop: 429 and
5xx answers and dropped connections are retried with exponential backoff (``backoff``,
``2*backoff``, ...), a ``Retry-After`` header (seconds or an HTTP date) is honoured up to
:data:`MAX_RETRY_AFTER` seconds, a refused connection or unknown host is retried once only,
404/410 raise :class:`NotFound` and every other failure a one-line
:class:`~torchwheel.errors.NetworkError` naming the URL.

Budgets (docs/security.md): :func:`read_body` reads a streamed answer under a byte cap
(:data:`MAX_PAGE_BYTES` for index pages and metadata) and an overall deadline for the whole
exchange (:data:`PAGE_DEADLINE`: a server dripping a byte every few seconds no longer holds
the client for minutes), and turns a body that lies about its encoding (``Content-Encoding:
gzip`` that is not) into a :class:`~torchwheel.errors.NetworkError`. Redirect loops stop at
:data:`MAX_REDIRECTS`. :class:`HostLog` records every host a client contacts (redirects
included) for the ``--json`` reports.

Also here: ``file://`` URL ↔ path (:func:`file_url_path` refuses remote hosts),
``#sha256=`` fragments (:func:`split_hash_fragment`), :func:`is_remote_url` (what a page
from the network may link to) and the cache root (:func:`cache_root`).
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
    "MAX_PAGE_BYTES",
    "MAX_REDIRECTS",
    "MAX_RETRY_AFTER",
    "PAGE_DEADLINE",
    "RETRY_STATUS",
    "USER_AGENT",
    "HostLog",
    "NotFound",
    "cache_root",
    "file_url_path",
    "get_with_retries",
    "is_remote_url",
    "local_path",
    "make_client",
    "parse_retry_after",
    "path_url",
    "read_body",
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
#: Largest index page or metadata file read (PyPI's torch page is ~1 MB as JSON).
MAX_PAGE_BYTES = 64 * 1024 * 1024
#: Seconds one page request may take in all, body included (however the bytes trickle in).
PAGE_DEADLINE = 120.0

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


class HostLog:
    """The hosts a client contacted (``scheme://host[:port]``, redirects included), in the
    order first seen: :meth:`attach` it to an ``httpx.Client`` as a request hook."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    def __call__(self, request: httpx.Request) -> None:
        url = request.url
        host = f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"
        if host not in self.hosts:
            self.hosts.append(host)

    def attach(self, client: httpx.Client) -> HostLog:
        """Record every request ``client`` sends from now on (idempotent); returns self."""
        hooks = client.event_hooks
        if self not in hooks["request"]:
            hooks["request"] = [*hooks["request"], self]
            client.event_hooks = hooks
        return self


def read_body(
    resp: httpx.Response,
    url: str,
    *,
    limit: int = MAX_PAGE_BYTES,
    deadline: float | None = None,
    what: str = "page",
) -> bytes:
    """The body of a streamed answer, at most ``limit`` bytes, finished before the
    ``deadline`` (a :func:`time.monotonic` value); closes ``resp``. Anything else — too large,
    too slow, a broken ``Content-Encoding``, a dropped connection — raises a one-line
    :class:`~torchwheel.errors.NetworkError` naming ``url``."""
    length = resp.headers.get("content-length", "")
    if length.isdigit() and len(length) < 20 and int(length) > limit:
        resp.close()
        raise NetworkError(
            f"{url}: the {what} is {int(length):,} bytes, over the {limit:,}-byte limit"
        )
    parts: list[bytes] = []
    got = 0
    try:
        for chunk in resp.iter_bytes():
            got += len(chunk)
            if got > limit:
                raise NetworkError(f"{url}: the {what} is over the {limit:,}-byte limit")
            if deadline is not None and time.monotonic() > deadline:
                raise NetworkError(
                    f"{url}: the {what} did not arrive in time ({got:,} bytes so far)"
                )
            parts.append(chunk)
    except httpx.DecodingError as exc:
        raise NetworkError(
            f"{url}: the {what} is not in its stated encoding ({_detail(exc)})"
        ) from None
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise NetworkError(
            f"{url}: the connection failed while reading the {what} ({_detail(exc)})"
        ) from None
    finally:
        resp.close()
    return b"".join(parts)


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
    retry_after_cap: float | None = None,
) -> httpx.Response:
    """GET ``url`` through ``client``, retrying what may heal (see the module docstring).

    Returns the answer when its status is 2xx, 304 or in ``accept_status`` (with ``stream``
    the caller reads and closes it). Raises :class:`NotFound` for 404/410 and
    :class:`~torchwheel.errors.NetworkError` otherwise: ``"<url>: HTTP 502 Bad Gateway after
    3 attempts"``, or for a connection that cannot be made ``unreachable(detail)`` (default
    ``"<url>: cannot connect (<detail>)"``). ``on_attempt`` runs before every request (to
    count them, or to raise when a budget is spent). A ``Retry-After`` is honoured up to
    ``retry_after_cap`` seconds (default :data:`MAX_RETRY_AFTER`).
    """
    cap = MAX_RETRY_AFTER if retry_after_cap is None else retry_after_cap
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
        except httpx.DecodingError as exc:  # a non-streamed body in a broken encoding
            raise NetworkError(
                f"{url}: the answer is not in its stated encoding ({_detail(exc)})"
            ) from None
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
            delay = retry_delay(attempt, backoff, resp.headers.get("retry-after"), cap=cap)
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


def is_remote_url(location: str) -> bool:
    """True for ``http://`` and ``https://`` URLs: what a page read from the network may link
    to (never ``file:``)."""
    return urlsplit(location).scheme.lower() in ("http", "https")


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
