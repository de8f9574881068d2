"""Where uploaded bytes go: a local folder (shared by the instances of one host, or mounted)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from ..._core.validate import check_id
from ...errors import NotFound, ValidationError

__all__ = ["LocalFileStore", "TemporaryFileStore"]

_CHUNK = 64 * 1024


class LocalFileStore:
    """Files in a local folder, one file per upload id, written atomically.

    The folder is made on the first upload. Several instances may share it (give
    every instance the same folder, on one host or a shared mount), so that a file
    sent to one instance can be downloaded from another.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _path(self, upload_id: str) -> Path:
        check_id(upload_id, "upload_id")
        if not all(c.isalnum() or c == "-" for c in upload_id):
            raise ValidationError("upload_id may contain only letters, digits and '-'")
        return self.directory / upload_id

    async def save(self, upload_id: str, chunks: AsyncIterator[bytes], *, size: int) -> None:
        """Write to a temporary file, check the size, then rename into place.

        Raises:
            rtkit.errors.ValidationError: The body is shorter or longer than
                ``size``, or ``upload_id`` is not a plain id; nothing is kept.
        """
        target = self._path(upload_id)
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".upload-")
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    written += len(chunk)
                    if written > size:
                        raise ValidationError(f"the body is longer than the announced {size} bytes")
                    await asyncio.to_thread(out.write, chunk)
            if written != size:
                raise ValidationError(
                    f"the body has {written} bytes but {size} bytes were announced"
                )
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def open(self, upload_id: str) -> AsyncIterator[bytes]:
        """Read the file back in chunks.

        Raises:
            rtkit.errors.NotFound: There is no file for ``upload_id`` here.
        """
        path = self._path(upload_id)
        try:
            handle = path.open("rb")
        except FileNotFoundError as exc:
            raise NotFound(f"upload {upload_id!r} has no stored file") from exc
        with handle:
            while chunk := await asyncio.to_thread(handle.read, _CHUNK):
                yield chunk


class TemporaryFileStore:
    """A [`LocalFileStore`][rtkit.realtime.LocalFileStore] on a private temporary folder.

    The folder is made on first use and removed by :meth:`cleanup`: what a
    server uses when it was given no file store.
    """

    def __init__(self) -> None:
        self._local: LocalFileStore | None = None

    def _store(self) -> LocalFileStore:
        if self._local is None:
            self._local = LocalFileStore(tempfile.mkdtemp(prefix="rtkit-uploads-"))
        return self._local

    async def save(self, upload_id: str, chunks: AsyncIterator[bytes], *, size: int) -> None:
        """See [`LocalFileStore.save`][rtkit.realtime.LocalFileStore.save]."""
        await self._store().save(upload_id, chunks, size=size)

    def open(self, upload_id: str) -> AsyncIterator[bytes]:
        """See [`LocalFileStore.open`][rtkit.realtime.LocalFileStore.open]."""
        return self._store().open(upload_id)

    def cleanup(self) -> None:
        """Remove the folder and every file in it."""
        local, self._local = self._local, None
        if local is not None:
            shutil.rmtree(local.directory, ignore_errors=True)
