"""Packaging and the Dataflow configuration: what can be checked without a cloud."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, SetupOptions
from apache_beam.runners.runner import create_runner

from .helpers import REPO


@pytest.fixture
def source_tree(tmp_path):
    """A copy of the repository: building leaves build/ and *.egg-info behind."""
    ignore = shutil.ignore_patterns(
        ".venv", ".git", "*cache*", "build", "*.egg-info", "camsdd-demo"
    )
    return Path(shutil.copytree(REPO, tmp_path / "src", ignore=ignore))


def _readme_dataflow_options() -> str:
    readme = (REPO / "README.md").read_text()
    block = re.search(r'OPTIONS="(runner=DataflowRunner[^"\s]*)"', readme)
    assert block, "README lost its Dataflow example"
    assert '--beam_pipeline_options="$OPTIONS"' in readme
    return block.group(1)


def test_readme_dataflow_options_are_known_complete_and_shippable(tmp_path, source_tree):
    flags = _readme_dataflow_options()
    # Exactly how `tfds build --beam_pipeline_options` turns the string into flags.
    options = PipelineOptions(flags=[f"--{opt}" for opt in flags.split(",")])
    given = options.get_all_options(drop_default=True, retain_unknown_options=True)
    assert set(given) <= set(options.get_all_options()), "unknown Beam option in README"
    assert type(create_runner(given["runner"])).__name__ == "DataflowRunner"
    cloud = options.view_as(GoogleCloudOptions)
    assert cloud.project and cloud.region and cloud.temp_location.startswith("gs://")
    # Beam stages the package by running `python setup.py sdist` on setup_file.
    setup_file = source_tree / options.view_as(SetupOptions).setup_file
    subprocess.run(
        [sys.executable, setup_file.name, "sdist", "--dist-dir", str(tmp_path / "dist")],
        cwd=setup_file.parent,
        check=True,
        capture_output=True,
    )
    (sdist,) = (tmp_path / "dist").glob("camsdd-*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    assert any(m.endswith("tfds_camsdd/camsdd/camsdd_dataset_builder.py") for m in members)
    assert any(m.endswith("pipeline/core/images.py") for m in members)


def test_wheel_ships_the_dataset_card_dummy_data_and_demo_photos(tmp_path, source_tree):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path / "dist"),
            ".",
        ],
        cwd=source_tree,
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("camsdd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for card in ("README.md", "CITATIONS.bib", "TAGS.txt", "checksums.tsv"):
        assert f"tfds_camsdd/camsdd/{card}" in names
    assert "tfds_camsdd/camsdd/dummy_data/CamSDD/training/9_Mountain/Thumbs.db" in names
    demo = [
        n
        for n in names
        if n.startswith("pipeline/demo_data/") and n.endswith((".jpg", ".png", ".webp"))
    ]
    expected = [
        p
        for p in (REPO / "pipeline" / "demo_data").rglob("*")
        if p.suffix in (".jpg", ".png", ".webp")
    ]
    assert len(demo) == len(expected) == 129
    assert "pipeline/demo_data/candidates/truth.csv" in names
    assert "crawlers/queries.csv" in names  # the editable default queries
    assert not [n for n in names if n.startswith("tests/")]  # tests are not shipped
    entry_points = [n for n in names if n.endswith("entry_points.txt")]
    assert b"camsdd = pipeline.cli:main" in zipfile.ZipFile(wheel).read(entry_points[0])


def test_readme_dataflow_stage_commands_parse_as_written():
    """Each `camsdd …` line of the README's Dataflow section, as the CLI parses it."""
    import shlex

    from pipeline import cli
    from pipeline.stages import options as beam_options

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Dataflow and `gs://`", 1)[1].split("\n## ", 1)[0]
    variables = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', section, flags=re.M))
    lines = [line.split("#")[0] for line in section.splitlines() if line.startswith("camsdd ")]
    stages = [shlex.split(line)[1] for line in lines]
    assert stages == ["crawl", "fetch", "embed", "dedup", "pseudolabel"]
    for line in lines:
        for name, value in variables.items():
            line = line.replace(f"${name}", value)
        argv = shlex.split(line)[1:]
        args, extra = cli.build_parser(argv[0]).parse_known_args(argv)
        assert args.work == "gs://BUCKET/W"
        if argv[0] == "crawl":  # runs where it is typed: no Beam
            assert not extra and not getattr(args, "accepts_beam_options", False)
            continue
        assert args.accepts_beam_options, argv[0]
        options = PipelineOptions(beam_options.with_local_runner(extra))
        given = options.get_all_options(drop_default=True, retain_unknown_options=True)
        assert set(given) <= set(options.get_all_options()), (argv[0], given)
        assert given["runner"] == "DataflowRunner"
        cloud = options.view_as(GoogleCloudOptions)
        assert cloud.project and cloud.region and cloud.temp_location.startswith("gs://")
        assert options.view_as(SetupOptions).setup_file == "./setup.py"
    assert "--config pseudo" in section and "CAMSDD_EXTRA_MANIFEST=$W/pseudolabel" in section
