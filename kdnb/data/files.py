"""Small file helpers: checksums, gzip trailers, atomic decompression (stdlib only)."""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_sha256sums(path: Path) -> dict[str, str]:
    """Parse a file in ``sha256sum`` format (``<hex>  <name>`` or ``<hex> *<name>``) into ``{name: hex}``."""
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest.lower()
    return sums


def gzip_trailer(path: Path) -> tuple[int, int]:
    """CRC-32 and size (mod 2**32) of the uncompressed data, from the last 8 bytes of a one-member gzip file."""
    with open(path, "rb") as f:
        f.seek(-8, os.SEEK_END)
        crc, size = struct.unpack("<II", f.read(8))
    return crc, size


def crc32_of(path: Path) -> int:
    """CRC-32 of a file (the checksum gzip stores for its uncompressed content)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def matches_gzip(decompressed: Path, gz: Path) -> bool:
    """Whether ``decompressed`` is exactly the content of ``gz`` (size and CRC-32 from the gzip trailer).

    This re-derives the expected checksum from the (already verified) ``.gz`` file, so no side-car is needed
    and a truncated or bit-flipped decompressed file is caught.
    """
    if not decompressed.is_file():
        return False
    crc, size = gzip_trailer(gz)
    return decompressed.stat().st_size % 2**32 == size and crc32_of(decompressed) == crc


def decompress_atomically(gz: Path, target: Path) -> None:
    """Decompress ``gz`` into ``target`` via a temporary file and ``os.replace``.

    A reader (another kernel running a chapter) never sees a half-written ``target``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(gz, "rb") as src:
            shutil.copyfileobj(src, out, _CHUNK)  # gzip checks its CRC at the end of the stream
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; the cache is plain readable data
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
