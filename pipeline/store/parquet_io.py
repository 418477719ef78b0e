"""Parquet bytes to an Arrow table, the one way every reader here parses them.

``pq.read_table`` lets its scan finish on Arrow's IO threads after it returns. If
the bytes it read were a Python object (``io.BytesIO``, ``bytes``), the last of
those buffers can be released on such a thread while the interpreter exits, and
the process aborts ("terminate called without an active exception", exit -6;
apache/arrow#49942, fixed only in pyarrow releases Beam does not allow yet). A
copy in Arrow's own memory needs no Python to be released.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def table_from_bytes(
    data: bytes, columns: list[str] | None = None, filters: Any = None
) -> pa.Table:
    """The table in ``data`` (a whole Parquet file), ``columns`` and ``filters`` as
    ``pq.read_table`` takes them."""
    owned = pa.BufferOutputStream()
    owned.write(data)
    return pq.read_table(pa.BufferReader(owned.getvalue()), columns=columns, filters=filters)
