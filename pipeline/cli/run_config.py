"""The TOML config of ``camsdd run``: its schema is the stages' own flags.

Every key of a stage's section is one of that command's flags (``--target-precision``
is ``target_precision``), with the flag's type, choices and default, so the config and
the commands can never drift apart. ``[run]`` holds what every stage shares; ``enabled``
switches an optional stage on or off. Relative paths in a config file are relative to
the file's folder; ``--work`` on the command line is relative to the current folder.

Checked whole before anything runs: an unknown section or key (with the closest name),
a value of the wrong type or outside the flag's choices, a crawl without a source, an
input file or folder that does not exist. Each is one line naming the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

from pipeline.core.errors import UserError

#: The stages `camsdd run` runs, in order; each is a section of the config.
STAGES = (
    "crawl", "fetch", "embed", "dedup", "pseudolabel", "build", "train", "quantize",
    "evaluate", "ablate", "review",
)  # fmt: skip
#: Stages that run `camsdd <stage>` with the section's keys as flags.
COMMAND_STAGES = ("crawl", "fetch", "embed", "dedup", "pseudolabel", "train", "quantize",
                  "evaluate", "ablate")  # fmt: skip
#: Off unless the config says ``enabled = true``.
OFF_BY_DEFAULT = frozenset({"ablate"})
#: Flags the runner sets itself, from [run] (never keys of a stage's section).
SHARED_FLAGS = frozenset({"work", "reference", "labeled", "data_dir", "help", "no_progress"})
#: Flags naming an input that must exist before the run starts.
INPUT_PATHS = {"urls": "file", "folder": "folder", "queries": "file", "truth": "file"}
RUN_KEYS = {
    "labeled": (str, None, "CAMSDD_ROOT: the labeled CamSDD folder (or its zip); required"),
    "work": (str, None, "work directory (the command line's --work wins)"),
    "workers": (int, 1, "local Beam worker processes (1: in process, the fastest here)"),
}
BUILD_KEYS = {
    "configs": (list, ["official", "pseudo"], "TFDS configs to build: official, pseudo"),
}
REVIEW_KEYS = {"port": (int, 5151, "the App's port when you open it later")}
DEMO_KEYS = {
    "serve": (str, None, "a folder served on 127.0.0.1:PORT while crawling and fetching"),
    "port": (int, 8471, "the port (the url list names it)"),
}


class ConfigError(UserError, ValueError):
    """A config that cannot run; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class Option:
    """One key of a stage's section: a flag of its command."""

    key: str
    flag: str
    kind: str  # "bool", "negatable", "int", "float", "str", "list"
    default: Any
    choices: tuple | None
    convert: Any  # the flag's argparse type, or None
    help: str


def command_options(command: str) -> dict[str, Option]:
    """The keys of ``[command]``: its flags, read from its own parser."""
    from pipeline import cli

    subparsers = argparse.ArgumentParser().add_subparsers()
    cli.command_module(command).add_parser(subparsers)
    parser = subparsers.choices[command]
    options = {}
    for action in parser._actions:  # argparse has no public list of a parser's actions
        if action.dest in SHARED_FLAGS or not action.option_strings:
            continue
        flag = max(action.option_strings, key=len)  # --max-per-class, not -m
        if isinstance(action, argparse.BooleanOptionalAction):
            flag = action.option_strings[0]  # --augment (its --no-augment comes second)
        if isinstance(action, argparse._StoreTrueAction):
            kind = "bool"
        elif isinstance(action, argparse.BooleanOptionalAction):
            kind = "negatable"
        elif isinstance(action, argparse._AppendAction):
            kind = "list"
        elif action.type in (int, float):
            kind = action.type.__name__
        elif getattr(action.type, "__name__", "") == "positive_int":
            kind = "int"
        else:
            kind = "str"
        default = action.default
        if isinstance(default, tuple):  # 224x336 and kin: written as they are typed
            default = "x".join(str(v) for v in default)
        options[action.dest] = Option(
            key=action.dest,
            flag=flag,
            kind=kind,
            default=default,
            choices=tuple(action.choices) if action.choices else None,
            convert=action.type if callable(action.type) else None,
            help=(action.help or "").replace("%(default)s", str(default)),
        )
    return options


def _closest(name: str, known: list[str]) -> str:
    match = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def _type_name(kind: str) -> str:
    return {"bool": "true or false", "negatable": "true or false", "int": "a whole number",
            "float": "a number", "str": "a string", "list": "a list"}[kind]  # fmt: skip


def _check_value(where: str, option: Option, value: Any) -> None:
    expected = {
        "bool": (bool,), "negatable": (bool,), "int": (int,), "float": (int, float),
        "str": (str, int, float), "list": (list,),
    }[option.kind]  # fmt: skip
    if isinstance(value, bool) and option.kind not in ("bool", "negatable"):
        expected = ()
    if not isinstance(value, expected):
        raise ConfigError(f"{where}: expected {_type_name(option.kind)}, got {value!r}")
    values = value if isinstance(value, list) else [value]
    for item in values:
        if option.choices and item not in option.choices:
            raise ConfigError(
                f"{where}: {item!r} is not one of {', '.join(map(str, option.choices))}"
            )
        if option.convert is not None and option.kind in ("int", "str"):
            try:
                option.convert(str(item))
            except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
                raise ConfigError(f"{where}: {error}") from None


@dataclasses.dataclass
class RunConfig:
    """A checked config: [run] values, and per stage its keys (flags) and ``enabled``."""

    path: str
    run: dict[str, Any]
    stages: dict[str, dict[str, Any]]  # stage -> checked keys (crawl: list of them)
    enabled: dict[str, bool]
    demo: dict[str, Any] | None

    def argv(self, stage: str, entry: dict[str, Any] | None = None) -> list[str]:
        """The flags of one stage (or one crawl entry), as the command takes them."""
        options = command_options(stage)
        flags: list[str] = []
        for key, value in sorted((entry if entry is not None else self.stages[stage]).items()):
            option = options[key]
            if option.kind == "bool":
                flags += [option.flag] if value else []
            elif option.kind == "negatable":
                flags += [option.flag if value else "--no-" + option.flag[2:]]
            elif option.kind == "list":
                for item in value:
                    flags += [option.flag, str(item)]
            else:
                flags += [option.flag, str(value)]
        return flags


def _paths_relative_to(base: str, key: str, value: Any) -> Any:
    if key in INPUT_PATHS or key == "labeled":
        return value if os.path.isabs(value) or "://" in value else os.path.join(base, value)
    return value


def load(path: str) -> RunConfig:
    """Reads and checks ``path``; raises ConfigError naming the first problem."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    return check(data, path)


def check(data: dict[str, Any], path: str = "config") -> RunConfig:
    base = os.path.dirname(os.path.abspath(path))
    known = ["run", *STAGES, "demo"]
    for section in data:
        if section not in known:
            match = difflib.get_close_matches(section, known, n=1)
            hint = f" (did you mean [{match[0]}]?)" if match else ""
            raise ConfigError(f"{path}: unknown section [{section}]{hint}")
    run = _check_plain(path, "run", data.get("run", {}), RUN_KEYS)
    if run.get("labeled"):
        run["labeled"] = _paths_relative_to(base, "labeled", run["labeled"])
        if "://" not in run["labeled"] and not os.path.exists(run["labeled"]):
            raise ConfigError(f"{path}: [run] labeled: no such file or folder: {run['labeled']}")
    else:
        raise ConfigError(f"{path}: [run] labeled is missing (the CamSDD folder)")
    stages: dict[str, Any] = {}
    enabled: dict[str, bool] = {}
    for stage in STAGES:
        section = data.get(stage, [] if stage == "crawl" else {})
        if stage == "crawl":
            if isinstance(section, dict):
                section = [section] if section else []
            stages[stage] = [_check_crawl(path, i + 1, e, base) for i, e in enumerate(section)]
            enabled[stage] = bool(stages[stage])
            continue
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: [{stage}] must be a table")
        section = dict(section)
        flag = section.pop("enabled", stage not in OFF_BY_DEFAULT)
        if not isinstance(flag, bool):
            raise ConfigError(f"{path}: [{stage}] enabled: expected true or false, got {flag!r}")
        enabled[stage] = flag
        if stage == "build":
            stages[stage] = _check_plain(path, stage, section, BUILD_KEYS)
            bad = [c for c in stages[stage]["configs"] if c not in ("official", "pseudo")]
            if bad:
                raise ConfigError(f"{path}: [build] configs: {bad[0]!r} is not official or pseudo")
        elif stage == "review":
            stages[stage] = _check_plain(path, stage, section, REVIEW_KEYS)
        else:
            stages[stage] = _check_command(path, f"[{stage}]", stage, section, base)
    demo = None
    if "demo" in data:
        demo = _check_plain(path, "demo", data["demo"], DEMO_KEYS)
        if demo.get("serve"):
            demo["serve"] = os.path.join(base, demo["serve"])
    return RunConfig(path, run, stages, enabled, demo)


def _check_plain(
    path: str, section: str, values: dict[str, Any], schema: dict[str, tuple]
) -> dict[str, Any]:
    checked = {key: default for key, (_, default, _) in schema.items()}
    for key, value in values.items():
        if key not in schema:
            raise ConfigError(f"{path}: [{section}] {key}: unknown key{_closest(key, [*schema])}")
        kind = schema[key][0]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(
                f"{path}: [{section}] {key}: expected {_type_name(kind.__name__)}, got {value!r}"
            )
        checked[key] = value
    return checked


def _check_command(
    path: str, where: str, command: str, values: dict[str, Any], base: str
) -> dict[str, Any]:
    options = command_options(command)
    checked = {}
    for key, value in values.items():
        if key not in options:
            raise ConfigError(f"{path}: {where} {key}: unknown key{_closest(key, [*options])}")
        _check_value(f"{path}: {where} {key}", options[key], value)
        value = _paths_relative_to(base, key, value)
        if key in INPUT_PATHS and "://" not in value:
            exists = os.path.isfile if INPUT_PATHS[key] == "file" else os.path.isdir
            if not exists(value):
                raise ConfigError(f"{path}: {where} {key}: no such {INPUT_PATHS[key]}: {value}")
        checked[key] = value
    return checked


def _check_crawl(path: str, number: int, entry: Any, base: str) -> dict[str, Any]:
    where = f"[[crawl]] #{number}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: {where} must be a table")
    if "source" not in entry:
        from pipeline.cli.crawl import SOURCES

        raise ConfigError(f"{path}: {where} source is missing (one of {', '.join(SOURCES)})")
    checked = _check_command(path, where, "crawl", entry, base)
    needs = {"urls": "urls", "folder": "folder"}.get(checked["source"])
    if needs and needs not in checked:
        raise ConfigError(f"{path}: {where} source {checked['source']} needs {needs} = ...")
    return checked


def render_defaults() -> str:
    """Every key of every stage with its default, as a TOML file to copy and edit."""
    lines = [
        "# camsdd run --config FILE: every stage's options with their defaults.",
        "# Keys are the stage command's flags (camsdd <stage> --help); relative paths are",
        "# relative to this file. A commented key has no default (the command decides).",
        "",
        "[run]",
    ]
    for key, (_, default, text) in RUN_KEYS.items():
        lines.append(_line(key, default, text))
    for stage in STAGES:
        lines.append("")
        if stage == "crawl":
            lines += ["# one [[crawl]] table per source; several are crawled in order", "[[crawl]]"]
        else:
            lines.append(f"[{stage}]")
            lines.append(f"enabled = {_toml(stage not in OFF_BY_DEFAULT)}")
        if stage == "build":
            lines += [_line(k, d, t) for k, (_, d, t) in BUILD_KEYS.items()]
        elif stage == "review":
            lines += [_line(k, d, t) for k, (_, d, t) in REVIEW_KEYS.items()]
        else:
            for option in command_options(stage).values():
                default = option.default
                if option.kind == "bool":
                    default = bool(default)
                lines.append(_line(option.key, default, option.help))
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _line(key: str, default: Any, text: str) -> str:
    text = " ".join(text.split())
    comment = f"  # {text[:100]}" if text else ""
    if default is None or default == []:
        return f"# {key} = ...{comment}"
    return f"{key} = {_toml(default)}{comment}"
