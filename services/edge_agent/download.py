"""Resumable downloads over HTTP with bounded retries: what a device on a flaky link needs.

Bytes go to `<digest>.part`; a retry (or the next agent start, after a crash) asks for the rest
with an HTTP Range request. The URL is fetched anew for each attempt, because a presigned URL may
have expired by the time a slow link retries. Nothing here trusts the bytes: verification is the
caller's next step.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from services.edge_agent.errors import DownloadFailed

CHUNK = 64 * 1024


def download(
    get_url: Callable[[], str],
    part: Path,
    *,
    size: int,
    attempts: int = 4,
    backoff: float = 0.5,
    rate_limit_bps: int | None = None,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    on_attempt: Callable[[int], None] = lambda attempt: None,
) -> Path:
    """Fetch `size` bytes into `part`, resuming what is already there; returns `part`.

    Raises:
        DownloadFailed: still incomplete after `attempts` tries (the partial file is kept).
    """
    last_error = "no attempt made"
    for attempt in range(1, attempts + 1):
        on_attempt(attempt)
        have = part.stat().st_size if part.exists() else 0
        if have > size:  # not the bytes we are after: start over
            part.unlink()
            have = 0
        if have == size:
            return part
        try:
            url = get_url()
        except Exception as exc:  # the registry did not answer (any reason): a failed attempt, retried
            last_error = f"no download URL: {type(exc).__name__}: {exc}"
        else:
            try:
                _fetch(url, part, have=have, size=size, rate_limit_bps=rate_limit_bps, on_progress=on_progress)
                if part.stat().st_size == size:
                    return part
                last_error = f"the server sent {part.stat().st_size} of {size} bytes"
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
        if attempt < attempts:
            time.sleep(backoff * 2 ** (attempt - 1))
    raise DownloadFailed(f"download incomplete after {attempts} attempts: {last_error}")


def _fetch(
    url: str, part: Path, *, have: int, size: int, rate_limit_bps: int | None, on_progress: Callable[[int, int], None]
) -> None:
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        if have and response.status != 206:  # the server ignored the range: take the whole body
            have = 0
        done = have
        started = time.monotonic()
        with part.open("ab" if have else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                on_progress(done, size)
                if rate_limit_bps:
                    ahead = (done - have) / rate_limit_bps - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
