"""One HTTP download attempt, resumable: what a device on a flaky link needs from its transfer seam.

Bytes go to `<digest>.part`; an attempt (a retry, or the next agent start after a crash) asks for
the rest with an HTTP Range request. The attempts themselves, a fresh URL for each and the
back-off between them are the install state machine's (`install.download`). Nothing here trusts
the bytes: verification is the caller's next step. Blocking (urllib): run it on a thread.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from services.edge_agent.errors import DownloadFailed

CHUNK = 64 * 1024
TIMEOUT = 30.0


def held(part: Path, *, size: int) -> int:
    """Bytes of `part` to resume from; a file longer than `size` is not what we are after: removed, 0."""
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        return 0
    return have


def fetch_range(
    url: str,
    part: Path,
    *,
    have: int,
    rate_limit_bps: int | None = None,
    on_progress: Callable[[int], None] = lambda done: None,
    stop: threading.Event | None = None,
) -> int:
    """GET `url` from byte `have` on, appending to `part`; returns the bytes `part` holds after.

    Args:
        url: a presigned URL (it must support `Range`; one that ignores it sends the whole body).
        part: the partial file, `have` bytes long.
        have: where to resume.
        rate_limit_bps: cap the transfer at this many bytes per second (tests, metered links).
        on_progress: called with the bytes held after each chunk.
        stop: set by the caller to abandon the attempt between two chunks (a newer install won).

    Raises:
        DownloadFailed: the server or the network failed the attempt (the partial file is kept).
    """
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            if have and response.status != 206:  # the server ignored the range: take the whole body
                have = 0
            done = have
            started = time.monotonic()
            with part.open("ab" if have else "wb") as out:
                while (stop is None or not stop.is_set()) and (chunk := response.read(CHUNK)):
                    out.write(chunk)
                    done += len(chunk)
                    on_progress(done)
                    if rate_limit_bps:
                        ahead = (done - have) / rate_limit_bps - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DownloadFailed(f"{type(exc).__name__}: {exc}") from None
    return part.stat().st_size
