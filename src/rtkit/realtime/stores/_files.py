"""Where uploaded bytes go: a local folder (shared by the instances of one host, or mounted)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from ..._core.validate import check_id
from ...errors import NotFound, ValidationError

__all__ = ["LocalFileStore", "TemporaryFileStore"]

_CHUNK = 64 * 1024
# The ids rtkit makes (UUIDs): the only names ids() lists, so that the janitor
# can never delete a file of someone else's in a folder it was pointed at.
_UPLOAD_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class LocalFileStore:
    """Files in a local folder, one file per upload id, written atomically.

    The folder is made on the first upload. Several instances may share it (give
    every instance the same folder, on one host or a shared mount), so that a file
    sent to one instance can be downloaded from another. A file being written is
    ``.<upload id>.<random>`` until it is complete; one left by a crashed instance
    is listed by :meth:`ids` under its upload id, so the janitor removes it with
    the upload's record.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @staticmethod
    def _check(upload_id: str) -> str:
        check_id(upload_id, "upload_id")
        if not all(c.isalnum() or c == "-" for c in upload_id):
            raise ValidationError("upload_id may contain only letters, digits and '-'")
        return upload_id

    def _path(self, upload_id: str) -> Path:
        return self.directory / self._check(upload_id)

    async def save(self, upload_id: str, chunks: AsyncIterator[bytes], *, size: int) -> None:
        """Write to a temporary file, check the size, then rename into place.

        Raises:
            rtkit.errors.ValidationError: The body is shorter or longer than
                ``size``, or ``upload_id`` is not a plain id; nothing is kept.
        """
        target = self._path(upload_id)
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{upload_id}.")
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

    async def delete(self, upload_id: str) -> None:
        """Remove the file of ``upload_id`` and any partial write of it (no error if none)."""
        self._check(upload_id)
        await asyncio.to_thread(self._delete, upload_id)

    def _delete(self, upload_id: str) -> None:
        paths = [self.directory / upload_id]
        with contextlib.suppress(OSError):
            paths += self.directory.glob(f".{upload_id}.*")
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def ids(self) -> AsyncIterator[str]:
        """The upload ids of every file here, complete or partial (each once).

        Only names of the form of the ids rtkit makes (UUIDs) are listed.
        """
        names = await asyncio.to_thread(self._names)
        for name in sorted(names):
            yield name

    def _names(self) -> set[str]:
        try:
            entries = os.listdir(self.directory)
        except FileNotFoundError:
            return set()
        found: set[str] = set()
        for entry in entries:
            name = entry[1:].split(".", 1)[0] if entry.startswith(".") else entry
            if _UPLOAD_ID.fullmatch(name):
                found.add(name)
        return found


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

    async def delete(self, upload_id: str) -> None:
        """See [`LocalFileStore.delete`][rtkit.realtime.LocalFileStore.delete]."""
        await self._store().delete(upload_id)

    async def ids(self) -> AsyncIterator[str]:
        """See [`LocalFileStore.ids`][rtkit.realtime.LocalFileStore.ids]."""
        if self._local is not None:  # no folder yet: nothing stored
            async for upload_id in self._local.ids():
                yield upload_id

    def cleanup(self) -> None:
        """Remove the folder and every file in it."""
        local, self._local = self._local, None
        if local is not None:
            shutil.rmtree(local.directory, ignore_errors=True)
