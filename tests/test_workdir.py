"""The work dir as users meet it: relative paths, other folders, Ctrl-C, two runs, damage.

Every stage runs here as a real ``camsdd`` subprocess against the loopback server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.store import manifest, workdir

from .helpers import BIN, DEMO_CAMSDD, camsdd


def _url_list(server, folder: Path, paths: list[str], label: str = "9_Mountain") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "list.csv"
    path.write_text("url,label\n" + "".join(f"{server.url(p)},{label}\n" for p in paths))
    return path


def _crawl(server, work: str, cwd: Path, paths: list[str], name: str = "list") -> None:
    listing = _url_list(server, cwd / "inputs", paths)
    result = camsdd("crawl", "--work", work, "--source", "urls", "--urls", str(listing),
                    "--name", name, cwd=cwd)  # fmt: skip
    assert result.returncode == 0, result.stderr


def _fetch(work: str, cwd: Path, *extra: str):
    return camsdd("fetch", "--work", work, "--allow-private-addresses", "--retries", "0", *extra,
                  cwd=cwd)  # fmt: skip


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "camsdd"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a signal for it alone, as a terminal's Ctrl-C would be
    )


def _wait_for_hits(server, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not server.hits.get(path):
        assert time.monotonic() < deadline, f"{path} was never requested"
        time.sleep(0.1)


def test_a_relative_work_dir_works_from_any_folder_and_nothing_is_fetched_twice(server, tmp_path):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _crawl(server, "w", here, ["/img/photo.jpg", "/img/photo.webp"])
    assert _fetch("w", here).returncode == 0
    rows = manifest.read_stage(str(here / "w"), "fetch").to_pylist()
    assert all(r["status"] == "kept" and not os.path.isabs(r["image_path"]) for r in rows)
    hits = dict(server.hits)

    # The same work dir named absolutely, from another folder: everything is reused.
    result = _fetch(str(here / "w"), elsewhere)
    assert result.returncode == 0, result.stderr
    assert "reused from the previous run: 2" in result.stdout
    assert server.hits == hits
    # And the teacher reads the stored images from there too.
    result = camsdd("embed", "--work", str(here / "w"), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert "2 embedded, 0 already cached, 0 unreadable" in result.stdout


def test_embed_fails_when_an_image_cannot_be_read_and_names_it(server, tmp_path):
    _crawl(server, "w", tmp_path, ["/img/photo.jpg", "/img/portrait.jpg"])
    assert _fetch("w", tmp_path).returncode == 0
    victim = manifest.read_stage(str(tmp_path / "w"), "fetch").to_pylist()[0]
    (tmp_path / "w" / victim["image_path"]).write_bytes(b"not a jpeg any more")
    result = camsdd("embed", "--work", "w", cwd=tmp_path)
    assert result.returncode == 2
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("error: 1 images could not be read") and victim["sha256"] in line
    assert "1 others embedded" in line and "Traceback" not in result.stderr


def test_ctrl_c_stops_a_stage_with_one_line_and_keeps_the_previous_manifest(server, tmp_path):
    _crawl(server, "w", tmp_path, ["/img/photo.jpg"])
    assert _fetch("w", tmp_path).returncode == 0
    before = manifest.latest_run(str(tmp_path / "w"), "fetch")
    _crawl(server, "w", tmp_path, ["/img/photo.jpg", "/slow/4", "/slow/5", "/slow/6"])
    running = _start(["fetch", "--work", "w", "--allow-private-addresses", "--threads", "1",
                      "--timeout", "30"], tmp_path)  # fmt: skip
    _wait_for_hits(server, "/slow/4")
    os.killpg(running.pid, signal.SIGINT)
    out, err = running.communicate(timeout=120)
    assert running.returncode == 130, err
    assert [line for line in err.splitlines() if line.strip()] == [
        "interrupted: camsdd fetch stopped; earlier results are unchanged"
    ]
    stage = tmp_path / "w" / "fetch"
    assert not list(stage.glob("beam-temp-*"))
    assert manifest.latest_run(str(tmp_path / "w"), "fetch") == before


def test_a_second_run_on_the_same_work_dir_refuses_and_a_killed_run_leaves_no_lock(
    server, tmp_path
):
    _crawl(server, "w", tmp_path, ["/img/photo.jpg", "/slow/8"])
    first = _start(["fetch", "--work", "w", "--allow-private-addresses", "--threads", "1",
                    "--timeout", "30"], tmp_path)  # fmt: skip
    _wait_for_hits(server, "/slow/8")
    started = time.monotonic()
    second = _fetch("w", tmp_path)
    assert second.returncode == 2 and time.monotonic() - started < 30
    assert "another `camsdd fetch` is running on this work dir (pid" in second.stderr
    assert "Traceback" not in second.stderr
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
    third = _fetch("w", tmp_path, "--timeout", "30")
    assert third.returncode == 0, third.stderr
    assert len(manifest.latest_run(str(tmp_path / "w"), "fetch")[1]) == 1
    table = manifest.read_stage(str(tmp_path / "w"), "fetch")
    assert sorted(table.column("url").to_pylist()) == sorted(
        server.url(p) for p in ("/img/photo.jpg", "/slow/8")
    )


def test_the_lock_is_per_stage_and_released():
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        with workdir.stage_lock(work, "fetch"):
            refused = pytest.raises(workdir.WorkDirError, match="another `camsdd fetch`")
            with refused, workdir.stage_lock(work, "fetch"):
                pass
            with workdir.stage_lock(work, "dedup"):  # another stage is free
                pass
        with workdir.stage_lock(work, "fetch"):  # released on exit
            pass


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_input_manifest_is_one_line_naming_it_and_nothing_is_lost(
    server, tmp_path, damage
):
    _crawl(server, "w", tmp_path, ["/img/photo.jpg"])
    assert _fetch("w", tmp_path).returncode == 0
    before = manifest.latest_run(str(tmp_path / "w"), "fetch")

    (crawl_manifest,) = (tmp_path / "w" / "crawl" / "list").glob("manifest-*.parquet")
    data = crawl_manifest.read_bytes()
    crawl_manifest.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    result = _fetch("w", tmp_path)
    assert result.returncode == 2
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert line.startswith(f"error: {crawl_manifest} is not a readable Parquet file")
    assert manifest.latest_run(str(tmp_path / "w"), "fetch") == before  # nothing lost

    crawl_manifest.write_bytes(data)
    (shard,) = before[1]
    fetched = Path(shard).read_bytes()
    Path(shard).write_bytes(b"" if damage == "empty" else fetched[:100])
    for command in (["fetch", "--allow-private-addresses"], ["embed"], ["dedup"]):
        result = camsdd(*command, "--work", "w", cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert f"{shard} is not a readable Parquet file" in result.stderr
        assert "Traceback" not in result.stderr
    assert Path(shard).stat().st_size == (0 if damage == "empty" else 100)  # left for the user


def test_bad_values_are_one_line_each(tmp_path):
    cases = {
        ("fetch", "--work", "w", "--threads", "0"): "--threads: 0 is not 1 or more",
        ("embed", "--work", "w", "--teacher-input", "0x0"): "--teacher-input: '0x0': both sides",
        ("crawl", "--work", "w", "--source", "urls", "--urls", "x.csv", "--name", "../x"): (
            "--name '../x'"
        ),
    }
    (tmp_path / "x.csv").write_text("url\nhttp://example.org/a.jpg\n")
    for args, expected in cases.items():
        result = camsdd(*args, cwd=tmp_path)
        assert result.returncode == 2, args
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len([x for x in result.stderr.splitlines() if x.startswith(("error", "usage"))])


def test_evaluate_given_a_folder_is_one_line(tmp_path):
    result = camsdd("evaluate", "--work", "w", "--model", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert str(tmp_path) in line


def test_output_piped_into_a_reader_that_left_ends_quietly(tmp_path):
    # `head -n 0` exits before camsdd writes a byte: every write meets a closed pipe.
    command = f"{BIN / 'camsdd'} check {DEMO_CAMSDD} | head -n 0; echo ${{PIPESTATUS[0]}}"
    result = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.stderr == "", result.stderr
    assert result.stdout.strip() == "141"  # the status of a command stopped by SIGPIPE
