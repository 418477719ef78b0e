"""Read Qt resource bundles (``.rcc``, the "qres" format) in plain Python.

Debian's ``gcompris-qt-data`` packs its photos in such files. Layout: a 20-byte
header (magic ``qres``, version, offsets of the tree, data and names), a tree of
fixed-size entries, UTF-16 names, and data blobs that may be zlib- or
zstd-compressed.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

_DIRECTORY = 0x02
_ZLIB = 0x01
_ZSTD = 0x04


def read_qres(path: str | Path) -> dict[str, bytes]:
    """Returns ``{resource path: bytes}`` for every file in an ``.rcc`` bundle."""
    blob = Path(path).read_bytes()
    if blob[:4] != b"qres":
        raise ValueError(f"{path} is not a Qt resource file (no 'qres' magic)")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    entry_size = 22 if version >= 2 else 14

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", blob[names + offset : names + offset + 2])
        start = names + offset + 6  # length (2) + hash (4)
        return blob[start : start + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}

    def walk(index: int, prefix: str) -> None:
        at = tree + index * entry_size
        name_offset, flags = struct.unpack(">IH", blob[at : at + 6])
        name = name_at(name_offset) if index else ""
        if flags & _DIRECTORY:
            count, first = struct.unpack(">II", blob[at + 6 : at + 14])
            for child in range(first, first + count):
                walk(child, f"{prefix}{name}/" if index else "")
            return
        (data_offset,) = struct.unpack(">I", blob[at + 10 : at + 14])
        (size,) = struct.unpack(">I", blob[data + data_offset : data + data_offset + 4])
        raw = blob[data + data_offset + 4 : data + data_offset + 4 + size]
        if flags & _ZLIB:
            raw = zlib.decompress(raw[4:])  # qCompress: 4-byte length, then zlib
        elif flags & _ZSTD:
            import zstandard

            raw = zstandard.ZstdDecompressor().decompress(raw)
        files[prefix + name] = raw

    walk(0, "")
    return files
