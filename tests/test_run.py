"""`camsdd run --config`: the config checked whole before anything runs, its defaults the
commands' own; the resumable run itself is exercised by the demo test in test_cli.py."""

from __future__ import annotations

import csv
import os

import pytest
import tomllib

from pipeline import cli
from pipeline.cli import demo, run_config
from pipeline.demo_data import CAMSDD_ROOT, CANDIDATES_DIR

from .helpers import camsdd


def test_print_config_is_every_commands_defaults_as_valid_toml(tmp_path):
    result = camsdd("run", "--print-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = tomllib.loads(result.stdout)
    assert set(data) == {"run", *run_config.STAGES}
    assert data["pseudolabel"]["target_precision"] == 0.98
    assert data["pseudolabel"]["folds"] == 4
    assert data["embed"]["teacher_input"] == "224x336"
    assert data["ablate"]["enabled"] is False and data["train"]["enabled"] is True
    # Filled in, it loads, and every stage's keys are that command's flags.
    text = result.stdout.replace("# labeled = ...", f'labeled = "{CAMSDD_ROOT}"')
    text = text.replace("# source = ...", 'source = "folder"')
    text = text.replace("# folder = ...", f'folder = "{CANDIDATES_DIR / "images"}"')
    (tmp_path / "all.toml").write_text(text)
    config = run_config.load(str(tmp_path / "all.toml"))
    assert config.argv("pseudolabel")[:2] == ["--folds", "4"] or "--folds" in config.argv(
        "pseudolabel"
    )
    assert "--freeze-backbone" not in config.argv("train")  # a negatable flag left unset


def _config(tmp_path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(f'[run]\nlabeled = "{CAMSDD_ROOT}"\n' + text)
    return str(path)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[pseudolabel]\ntarget_precison = 0.9\n",
         "[pseudolabel] target_precison: unknown key (did you mean target_precision?)"),
        ("[pseudolable]\n", "unknown section [pseudolable] (did you mean [pseudolabel]?)"),
        ('[pseudolabel]\nfolds = "four"\n',
         "[pseudolabel] folds: expected a whole number, got 'four'"),
        ("[fetch]\nallow_private_addresses = 1\n",
         "[fetch] allow_private_addresses: expected true or false, got 1"),
        ('[fetch]\nportrait = "squash"\n', "[fetch] portrait: 'squash' is not one of"),
        ("[fetch]\nthreads = 0\n", "[fetch] threads: 0 is not 1 or more"),
        ('[[crawl]]\nname = "mine"\n', "[[crawl]] #1 source is missing (one of flickr"),
        ('[[crawl]]\nsource = "urls"\n', "[[crawl]] #1 source urls needs urls = ..."),
        ('[[crawl]]\nsource = "urls"\nurls = "gone.csv"\n', "[[crawl]] #1 urls: no such file"),
        ('[build]\nconfigs = ["official", "extra"]\n',
         "[build] configs: 'extra' is not official or pseudo"),
        ("[pseudolabel\n", "not valid TOML"),
    ],
)  # fmt: skip
def test_a_bad_config_is_one_line_naming_the_key_before_anything_runs(
    tmp_path, capsys, text, expected
):
    work = tmp_path / "work"
    code = cli.main(["run", "--config", _config(tmp_path, text), "--work", str(work)])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert "config.toml" in lines[0]
    assert not work.exists()  # nothing ran


def test_a_config_without_labeled_or_work_says_so(tmp_path):
    (tmp_path / "c.toml").write_text("[fetch]\n")
    result = camsdd("run", "--config", str(tmp_path / "c.toml"), cwd=tmp_path)
    assert result.returncode == 2 and "[run] labeled is missing" in result.stderr
    result = camsdd("run", "--config", _config(tmp_path, ""), cwd=tmp_path)
    assert result.returncode == 2 and "no work directory: give --work or [run] work" in (
        result.stderr
    )
    result = camsdd("run", "--config", str(tmp_path / "none.toml"), cwd=tmp_path)
    assert result.returncode == 2 and "none.toml: no such config file" in result.stderr


def test_paths_in_a_config_are_relative_to_its_file(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "list.csv").write_text("url\nhttp://127.0.0.1:1/a.jpg\n")
    os.symlink(CAMSDD_ROOT, tmp_path / "conf" / "CamSDD")
    (tmp_path / "conf" / "c.toml").write_text(
        '[run]\nlabeled = "CamSDD"\n[[crawl]]\nsource = "urls"\nurls = "list.csv"\n'
    )
    config = run_config.load(str(tmp_path / "conf" / "c.toml"))
    assert config.run["labeled"] == str(tmp_path / "conf" / "CamSDD")
    assert config.stages["crawl"][0]["urls"] == str(tmp_path / "conf" / "list.csv")


def test_the_shipped_demo_url_list_is_what_the_demo_data_makes(tmp_path):
    made = demo.write_demo_url_list(demo.DEMO_URL_BASE, tmp_path / "urls.csv")
    assert made.read_text() == (CANDIDATES_DIR / "urls.csv").read_text()
    truth = demo.write_demo_url_truth(demo.DEMO_URL_BASE, tmp_path / "url_truth.csv")
    assert truth.read_text() == (CANDIDATES_DIR / "url_truth.csv").read_text()
    config = run_config.load(os.fspath(demo.DEMO_CONFIG))
    assert demo.DEMO_URL_BASE.endswith(f":{config.demo['port']}")
    with open(CANDIDATES_DIR / "urls.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 62
