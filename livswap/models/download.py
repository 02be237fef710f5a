"""Resumable, verified downloads that never leave a partial file where a complete one belongs.

Bytes go to ``NAME.part`` next to the destination; an interrupted transfer resumes from there
with an HTTP Range request. Only a complete, verified file is renamed into place (atomically).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from livswap.errors import ModelError

__all__ = ["download", "sha256_of"]

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, part: Path, *, max_bytes: int | None, timeout: float, label: str) -> None:
    """Download ``url`` into ``part``, resuming what is already there."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "livswap"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is already complete
            return
        raise ModelError(f"{label}: {url} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelError(f"{label}: cannot reach {url}: {reason}") from None
    with response:
        resumed = response.status == 206
        if have and not resumed:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        if max_bytes is not None and total is not None and total > max_bytes:
            raise ModelError(f"{label}: {url} is {total / 2**20:.0f} MB, far more than expected")
        mode = "ab" if resumed else "wb"
        with (
            part.open(mode) as out,
            tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=label, disable=None
            ) as bar,
        ):
            try:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, TimeoutError) as exc:
                raise ModelError(
                    f"{label}: download from {url} was interrupted ({exc}); run "
                    "the same command again to resume"
                ) from None
        got = part.stat().st_size
        if total is not None and got < total:
            raise ModelError(
                f"{label}: download from {url} stopped at {got} of {total} bytes; "
                "run the same command again to resume"
            )


def download(
    urls: Sequence[str],
    dest: Path,
    *,
    sha256: str | None = None,
    archive_member: str | None = None,
    max_bytes: int | None = None,
    timeout: float = 30.0,
    label: str = "download",
) -> str:
    """Fetch the first URL that works into ``dest``; returns the file's sha256.

    Raises :class:`ModelError` naming the URL and the problem; a partly downloaded file is kept
    as ``dest.part`` (or ``dest.download``) for the next attempt, never at ``dest``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + (".download" if archive_member else ".part"))
    errors = []
    for url in urls:
        try:
            _fetch(url, part, max_bytes=max_bytes, timeout=timeout, label=label)
            break
        except ModelError as exc:
            errors.append(str(exc))
            if len(urls) > 1:  # the next mirror is tried; the final error says it all
                log.info("%s; trying the next address", exc)
    else:
        raise ModelError(errors[-1] if len(errors) == 1 else "; ".join(errors))
    staged = dest.with_name(dest.name + ".verify")
    if archive_member:
        try:
            with zipfile.ZipFile(part) as archive:
                members = [m for m in archive.namelist() if m.endswith(archive_member)]
                if not members:
                    raise ModelError(f"{label}: the archive has no {archive_member!r}")
                with archive.open(members[0]) as src, staged.open("wb") as out:
                    shutil.copyfileobj(src, out)
        except zipfile.BadZipFile:
            part.unlink(missing_ok=True)
            raise ModelError(f"{label}: the download is not a valid zip archive") from None
    else:
        part.replace(staged)
    digest = sha256_of(staged)
    if sha256 is not None and digest != sha256:
        staged.unlink()
        part.unlink(missing_ok=True)
        raise ModelError(
            f"{label}: sha256 mismatch: expected {sha256}, got {digest}; the file was deleted"
        )
    staged.replace(dest)
    part.unlink(missing_ok=True)
    return digest
