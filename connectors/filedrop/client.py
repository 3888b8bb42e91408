"""FileDrop: hands canonical records to systems that import files from a shared folder.

Many ERPs and warehouse systems still take orders as files dropped into a folder (EDI-style).
One JSON document per record at <directory>/<entity>/<canonical id>.json, written atomically
(temp file + rename) so an importer never reads half a file. Idempotent by canonical id: the
file name is the reference, so writing the same record again changes nothing.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from connectors.filedrop.settings import FileDropSettings
from crmhub.errors import HubError, PermanentError, TransientError

SYSTEM = "filedrop"


class FileDrop:
    def __init__(self, settings: FileDropSettings) -> None:
        self.directory = settings.directory

    @classmethod
    def from_env(cls) -> FileDrop:
        return cls(FileDropSettings())

    def path_for(self, entity: str, canonical_id: str) -> Path:
        # Percent-encoding is reversible: "A/B" and "A_B" get different files.
        name = quote(canonical_id, safe="")
        if not name.strip("."):
            raise PermanentError(f"canonical id {canonical_id!r} cannot name a file", system=SYSTEM)
        return self.directory / entity / f"{name}.json"

    async def write(self, entity: str, canonical_id: str, document: dict[str, Any]) -> str:
        """Write (or rewrite) the record; returns its external id, the path relative to the root."""
        try:
            return await asyncio.to_thread(self._write, entity, canonical_id, document)
        except OSError as exc:
            raise classify(exc) from exc

    async def read(self, entity: str, canonical_id: str) -> dict[str, Any] | None:
        path = self.path_for(entity, canonical_id)
        try:
            text = await asyncio.to_thread(path.read_text, "utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise classify(exc) from exc
        document: dict[str, Any] = json.loads(text)
        return document

    def _write(self, entity: str, canonical_id: str, document: dict[str, Any]) -> str:
        path = self.path_for(entity, canonical_id)
        body = json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        if path.exists() and path.read_text("utf-8") == body:
            return str(path.relative_to(self.directory))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(path.relative_to(self.directory))


def classify(exc: OSError) -> HubError:
    """Permissions and bad names will not fix themselves; a full or vanished disk may."""
    if isinstance(exc, PermissionError) or exc.errno in (errno.EROFS, errno.ENAMETOOLONG):
        return PermanentError(f"cannot write to the drop folder: {exc}", system=SYSTEM)
    return TransientError(f"drop folder unavailable: {exc}", system=SYSTEM)
