"""Stage code reaches the work dir only through Beam's FileSystems or epath (gs:// too).

``open()``, ``os.path``, ``pathlib``, ``os.listdir``/``makedirs``/…, ``shutil``, ``glob``
and ``tempfile`` work on local paths only: on ``--work gs://…`` they fail, or worse,
write a local folder named ``gs:``. This test reads the stages, the store and the TFDS
builder and fails on any such use that is not in ALLOWED below, each with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

SCANNED = ["pipeline/stages", "pipeline/store", "tfds_camsdd"]

#: (file, the line's code) -> why this local-only call is right there.
ALLOWED = {
    (
        "pipeline/store/camsdd_layout.py",
        "return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS",
    ): "string operation on a file name, no file access",
    (
        "pipeline/store/camsdd_layout.py",
        'extension = os.path.splitext(item.name)[1] or "no extension"',
    ): "string operation on a file name, no file access",
    (
        "pipeline/store/workdir.py",
        "return os.path.abspath(os.path.expanduser(work))",
    ): "absolute(): the local branch, after `is_remote(work)` returned",
    (
        "pipeline/store/workdir.py",
        "if is_remote(path) or os.path.isabs(path):",
    ): "string test, reached only for paths that are not URLs",
    (
        "pipeline/store/workdir.py",
        "os.makedirs(directory, exist_ok=True)",
    ): "stage_lock(): local work dirs use flock on a local file; gs:// takes _remote_lock",
    (
        "pipeline/store/workdir.py",
        'handle = open(path, "a+")  # noqa: SIM115  (held for the whole run)',
    ): "stage_lock(): flock needs a local file descriptor; gs:// takes _remote_lock",
    (
        "pipeline/store/workdir.py",
        "import shutil",
    ): "remove_beam_temp(): the local branch, after the gs:// branch returned",
    (
        "pipeline/store/workdir.py",
        "shutil.rmtree(folder, ignore_errors=True)",
    ): "remove_beam_temp(): local branch (FileSystems.delete leaves empty local folders)",
    (
        "pipeline/store/workdir.py",
        "if os.path.isdir(stage_dir):",
    ): "remove_beam_temp(): the local branch, empty beam-temp folders",
    (
        "pipeline/store/workdir.py",
        "for entry in os.listdir(stage_dir):",
    ): "remove_beam_temp(): the local branch, empty beam-temp folders",
    (
        "pipeline/store/workdir.py",
        "shutil.rmtree(os.path.join(stage_dir, entry), ignore_errors=True)",
    ): "remove_beam_temp(): the local branch, empty beam-temp folders",
}

_OS_FILE_CALLS = {
    "listdir", "makedirs", "mkdir", "remove", "unlink", "rmdir", "rename", "replace",
    "scandir", "walk", "stat", "lstat", "chdir", "getcwd", "open",
}  # fmt: skip
_LOCAL_MODULES = {"pathlib", "shutil", "glob", "tempfile"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def local_file_access(source: str) -> list[tuple[int, str]]:
    """(line, what) for each local-only file access in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        what = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "open":
                what = "open()"
        elif isinstance(node, ast.Attribute):
            name = _dotted(node)
            depth = name.count(".")
            head = name.split(".")[0]
            if (
                (name.startswith("os.path.") and depth == 2)
                or (head == "os" and depth == 1 and node.attr in _OS_FILE_CALLS)
                or (head in _LOCAL_MODULES and depth == 1)
                or name in ("io.open", "Path.open")
            ):
                what = name
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
            if set(names) & _LOCAL_MODULES:
                what = "import " + ", ".join(names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            imported = {a.name for a in node.names}
            if module.split(".")[0] in _LOCAL_MODULES or (
                module.split(".")[0] == "os"
                and (module != "os" or imported & (_OS_FILE_CALLS | {"path"}))
            ):
                what = f"from {module} import …"
        if what:
            found.append((node.lineno, what))
    return sorted(set(found))


def _scanned_files() -> list[Path]:
    files = []
    for folder in SCANNED:
        files += [
            p
            for p in sorted((REPO / folder).rglob("*.py"))
            if not p.name.endswith("_test.py") and "dummy_data" not in p.parts
        ]
    return files


def test_stage_code_has_no_local_only_file_access():
    used, offending = set(), []
    for path in _scanned_files():
        relative = path.relative_to(REPO).as_posix()
        lines = path.read_text().splitlines()
        for line, what in local_file_access(path.read_text()):
            key = (relative, lines[line - 1].strip())
            if key in ALLOWED:
                used.add(key)
            else:
                offending.append(f"{relative}:{line}: {what}: {lines[line - 1].strip()}")
    assert not offending, (
        "local-only file access in stage code (use pipeline.store.workdir / FileSystems or "
        "epath, or add it to ALLOWED with a reason):\n" + "\n".join(offending)
    )
    assert not set(ALLOWED) - used, f"stale ALLOWED entries: {sorted(set(ALLOWED) - used)}"


def test_the_scan_sees_what_it_must():
    bad = """
import os, shutil
from pathlib import Path
from os.path import join
def f(work):
    with open(work + "/x") as h: pass
    os.makedirs(os.path.join(work, "a"))
    shutil.rmtree(work)
"""
    whats = [what for _, what in local_file_access(bad)]
    assert whats.count("open()") == 1
    assert {"os.makedirs", "os.path.join", "shutil.rmtree", "import os, shutil"} <= set(whats)
    assert "from pathlib import …" in whats and "from os.path import …" in whats
    good = """
from apache_beam.io.filesystems import FileSystems
from etils import epath
def f(work):
    with FileSystems.open(work) as h: h.read()
    epath.Path(work).read_bytes()
    os.environ.get("X"); os.getpid()
"""
    assert local_file_access(good) == []
