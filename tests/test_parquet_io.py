"""Reading Parquet never leaves a Python-owned buffer to Arrow's IO threads.

Finished `camsdd fetch` runs sometimes exited -6 ("terminate called without an active
exception") after writing their report: ``pq.read_table(io.BytesIO(...))`` had left its
scan finishing on an Arrow IO thread, which released a Python-backed buffer while the
interpreter exited. ``parquet_io.table_from_bytes`` is the one place that parses bytes.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store import parquet_io
from tests.helpers import REPO

ROWS = 20_000
RUNS = 24
#: Reads, checks and exits at once: the old way aborted about one run in two.
READ_THEN_EXIT = (
    "import sys; from pipeline.store import parquet_io; "
    "data = open(sys.argv[1], 'rb').read(); "
    f"assert parquet_io.table_from_bytes(data).num_rows == {ROWS}"
)


def _many_row_groups(path: Path) -> Path:
    keys = [f"key-{i:05d}" for i in range(ROWS)]
    pq.write_table(pa.table({"key": keys, "n": range(ROWS)}), path, row_group_size=500)
    return path


def test_a_process_that_read_parquet_bytes_exits_cleanly(tmp_path):
    path = _many_row_groups(tmp_path / "manifest.parquet")
    # One after another: on a busy machine the IO thread tends to finish before exit.
    results = [
        subprocess.run(
            [sys.executable, "-c", READ_THEN_EXIT, str(path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for _ in range(RUNS)
    ]
    failed = [(r.returncode, r.stderr[-300:]) for r in results if r.returncode != 0]
    assert not failed, f"{len(failed)} of {RUNS} runs failed, first: {failed[0]}"


def test_columns_and_filters_are_read_as_pq_read_table_reads_them(tmp_path):
    data = _many_row_groups(tmp_path / "m.parquet").read_bytes()
    table = parquet_io.table_from_bytes(data, ["key"], [("n", "in", [3, 19_999])])
    assert table.column_names == ["key"]
    assert table.column("key").to_pylist() == ["key-00003", "key-19999"]


def test_no_other_code_parses_parquet_with_read_table():
    calls = []
    for folder in ("pipeline", "tfds_camsdd", "crawlers"):
        for file in sorted((REPO / folder).rglob("*.py")):
            if file == REPO / "pipeline" / "store" / "parquet_io.py":
                continue
            for node in ast.walk(ast.parse(file.read_text())):
                called = node.func if isinstance(node, ast.Call) else None
                if (
                    isinstance(called, ast.Attribute)
                    and called.attr in ("read_table", "ParquetFile", "ParquetDataset")
                    and ast.unparse(called.value) in ("pq", "pyarrow.parquet", "parquet")
                ):
                    calls.append(f"{file.relative_to(REPO)}:{node.lineno}")
    assert not calls, f"parse Parquet with parquet_io.table_from_bytes instead: {calls}"
