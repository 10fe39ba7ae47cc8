"""The network probe behind a suggestion: an older release of the largest package that fits.

Sizes come from each candidate wheel's zip central directory (HTTP range reads through
:func:`torchwheel.remote.remote_wheel_size`, no download).
"""

from __future__ import annotations

import httpx
from packaging.version import Version

from ..index import IndexClient
from ..remote import remote_wheel_size
from ..resolution import select
from ..targets import Target, quotas
from .report import OlderRelease, PackageSize
from .slimrules import slim_rule_for

__all__ = ["find_older_release"]


def find_older_release(
    package: PackageSize,
    layer_bytes: int,
    target: Target,
    index: IndexClient,
    *,
    slimmed: bool,
    client: httpx.Client | None = None,
    max_probes: int = 8,
) -> OlderRelease | None:
    """The newest compatible release older than ``package`` whose wheel, installed (and slimmed
    when ``slimmed``), keeps the layer within the unzipped quota.

    At most ``max_probes`` wheels are read, newest first. Strip savings are not counted, so
    the estimate errs on the large side.
    """
    budget = quotas().unzipped - (layer_bytes - package.unzipped_bytes)
    current = Version(package.version)
    _, judged = select(index.candidates(package.name), target)
    seen: set[Version] = set()
    probed = 0
    for cand, verdict in judged:
        if not verdict.compatible or cand.version >= current or cand.version in seen:
            continue
        seen.add(cand.version)
        if probed >= max_probes:
            break
        probed += 1
        size = remote_wheel_size(cand.url, client=client, top=1 << 30)
        total = size.unzipped
        if slimmed:
            total -= sum(n for name, n in size.largest if slim_rule_for(name) is not None)
        if total <= budget:
            return OlderRelease(
                package.name,
                str(cand.version),
                cand.filename,
                total,
                layer_bytes - package.unzipped_bytes + total,
                probed,
            )
    return None
