"""The chat's upload events: announce, send the bytes, sign download links, expire.

The bytes go over HTTP (``PUT /api/uploads/<id>``); the file is downloaded with a
short-lived link signed for one file and one user (``_links.py``), never with a
session token in a URL. Uploads count against per-user and per-server byte
quotas and expire with their records; :meth:`ChatFiles.sweep_uploads` deletes
the files of expired records and of records that are gone for any other reason
(a crashed instance, an evicted memory record).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from .._core.ids import new_id
from .._core.validate import check_id
from ..errors import Conflict, Forbidden, NotFound, PayloadTooLarge, ValidationError
from ._auth import Identity
from ._chat_base import ChatBase, Emit, Outcome, parse_payload, room_channel, user_channel
from ._protocol import (
    DownloadIn,
    FileShared,
    FileUploadComplete,
    FileUploadReady,
    FileUploadStart,
    FileUploadStartIn,
    iso_time,
    wire,
)
from .stores import UploadQuota, UploadRecord

__all__ = ["ChatFiles"]

log = logging.getLogger("rtkit.realtime")

_SWEEP_BATCH = 500


class ChatFiles(ChatBase):
    """Uploads and downloads (part of [`ChatService`][rtkit.realtime.ChatService])."""

    def _quota(self) -> UploadQuota:
        limits = self.limits
        return UploadQuota(
            user_bytes=limits.upload_quota_per_user,
            total_bytes=limits.upload_quota_per_server,
            user_uploads=limits.max_uploads_per_user,
        )

    async def start_upload(self, who: Identity, sid: str, data: Any) -> Outcome:
        """``file:upload:start``: announced to the others, ``file:upload:ready`` back.

        The announced size counts against the user's and the server's upload
        quotas from now until the upload expires
        ([`QuotaExceeded`][rtkit.errors.QuotaExceeded] when it would not fit).
        """
        await self._limit(who, "upload", self.limits.upload_rate)
        payload = parse_payload(FileUploadStartIn, data, "file:upload:start")
        room_id = self._room_id(payload.room_id)
        name = check_id(payload.file_name, "fileName", max_bytes=self.limits.max_file_name_bytes)
        if "/" in name or "\\" in name or name in {".", ".."}:
            raise ValidationError("fileName must be a plain file name, without a path")
        if payload.file_size > self.limits.max_upload_bytes:
            raise PayloadTooLarge(f"fileSize is larger than {self.limits.max_upload_bytes} bytes")
        await self._require_member(room_id, who, sid)
        now = self.clock.time()
        record = UploadRecord(
            upload_id=new_id(),
            room_id=room_id,
            user_id=who.user_id,
            file_name=name,
            file_size=payload.file_size,
            created_at=now,
        )
        await self.uploads.create(record, quota=self._quota())
        start = FileUploadStart(
            id=new_id(),
            user_id=who.user_id,
            room_id=room_id,
            file_name=name,
            file_size=record.file_size,
            upload_id=record.upload_id,
            timestamp=iso_time(now),
        )
        ready = wire(FileUploadReady(upload_id=record.upload_id))
        return Outcome(
            ack=ready,
            emits=[
                Emit("file:upload:start", wire(start), to=room_channel(room_id), skip_sid=sid),
                Emit("file:upload:ready", ready, to=sid),
            ],
        )

    async def receive_upload(
        self, who: Identity, upload_id: str, body: AsyncIterator[bytes], *, size: int | None
    ) -> Outcome:
        """The uploader sends the announced bytes; each member then gets ``file:upload:complete``.

        ``size`` is the request's Content-Length (``None`` if absent); it must
        equal the announced size, and so must the body. Each member of the room
        receives the event on every connection with a download link signed for
        them; the ack (``{uploadId, url, expiresAt}``) holds the uploader's. The
        room's history keeps the share ([`FileShared`][rtkit.realtime.FileShared]),
        whose ``id`` the event carries too.
        """
        check_id(upload_id, "uploadId")
        record = await self.uploads.get(upload_id)
        if record is None:
            raise NotFound(f"upload {upload_id!r} is unknown or expired")
        if record.user_id != who.user_id:
            raise Forbidden("only the user who announced this upload may send it")
        if size is not None and size != record.file_size:
            raise ValidationError(
                f"the body has {size} bytes but {record.file_size} bytes were announced"
            )
        if await self.uploads.claim(upload_id) is None:
            raise Conflict("this upload is complete or already in progress")
        try:
            await self.files.save(upload_id, body, size=record.file_size)
        except BaseException:
            await self.uploads.release(upload_id)
            raise
        try:
            await self.uploads.complete(upload_id)
        except NotFound:
            await self.files.delete(upload_id)  # its record expired meanwhile
            raise
        shared = FileShared(
            id=new_id(),
            upload_id=upload_id,
            user_id=who.user_id,
            username=who.username,
            file_name=record.file_name,
            file_size=record.file_size,
            timestamp=self._now(),
            room_id=record.room_id,
        )
        await self._remember(shared)
        emits: list[Emit] = []
        async for members in self._member_pages(record.room_id):
            emits.extend(self._completed(shared, member) for member in members)
        link = self.links.sign(upload_id, who.user_id)
        ack = {"uploadId": upload_id, "url": link.url, "expiresAt": iso_time(link.expires_at)}
        return Outcome(ack=ack, emits=emits)

    def _completed(self, shared: FileShared, member: str) -> Emit:
        done = FileUploadComplete(
            upload_id=shared.upload_id,
            room_id=shared.room_id,
            file_name=shared.file_name,
            file_size=shared.file_size,
            url=self.links.sign(shared.upload_id, member).url,
            user_id=shared.user_id,
            id=shared.id,
            username=shared.username,
            timestamp=shared.timestamp,
        )
        return Emit("file:upload:complete", wire(done), to=user_channel(member))

    async def download_link(self, who: Identity, sid: str, data: Any) -> Outcome:
        """``file:download {uploadId}``: a fresh link to a complete upload, for members only.

        The ack is ``{uploadId, url, expiresAt}``: the URL works without any
        other credential, for this user, until ``expiresAt``.
        """
        await self._limit(who, "download", self.limits.download_rate)
        upload_id = check_id(parse_payload(DownloadIn, data, "file:download").upload_id, "uploadId")
        record = await self.uploads.get(upload_id)
        if record is None or not record.complete:
            raise NotFound(f"upload {upload_id!r} does not exist or is not complete")
        await self._require_member(record.room_id, who, sid)
        link = self.links.sign(upload_id, who.user_id)
        return Outcome(
            ack={"uploadId": upload_id, "url": link.url, "expiresAt": iso_time(link.expires_at)}
        )

    async def download(
        self, who: Identity, upload_id: str
    ) -> tuple[UploadRecord, AsyncIterator[bytes]]:
        """A completed upload's record and bytes, for members of its room only.

        The first chunk is read here, so a file missing from the store (say, an
        instance without the shared upload folder) is a ``NotFound`` now rather
        than a broken response later.
        """
        await self._limit(who, "download", self.limits.download_rate)
        check_id(upload_id, "uploadId")
        record = await self.uploads.get(upload_id)
        if record is None or not record.complete:
            raise NotFound(f"upload {upload_id!r} does not exist or is not complete")
        await self._require_member(record.room_id, who, None)
        chunks = self.files.open(upload_id)
        first = await anext(chunks, b"")

        async def body() -> AsyncIterator[bytes]:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk

        return record, body()

    async def sweep_uploads(self) -> int:
        """Delete the files whose upload records are gone; return how many.

        Forgets expired records first (which frees their quota), then deletes
        their files and every other stored file no live record knows (left by a
        crashed instance, or by a record a memory registry forgot). The server's
        janitor calls this every ``sweep_interval`` seconds.
        """
        removed = 0
        while expired := await self.uploads.purge_expired(_SWEEP_BATCH):
            for upload_id in expired:
                removed += await self._delete_file(upload_id)
            if len(expired) < _SWEEP_BATCH:
                break
        batch: list[str] = []
        async for upload_id in self.files.ids():
            batch.append(upload_id)
            if len(batch) == _SWEEP_BATCH:
                removed += await self._delete_unknown(batch)
                batch = []
        if batch:
            removed += await self._delete_unknown(batch)
        return removed

    async def _delete_unknown(self, upload_ids: list[str]) -> int:
        known = await self.uploads.known(upload_ids)
        removed = 0
        for upload_id in upload_ids:
            if upload_id not in known:
                removed += await self._delete_file(upload_id)
        return removed

    async def _delete_file(self, upload_id: str) -> int:
        with contextlib.suppress(ValidationError):  # an id this file store cannot hold
            await self.files.delete(upload_id)
            return 1
        return 0
