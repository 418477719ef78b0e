"""``camsdd run --config FILE``: every stage in order from one TOML config, resumable.

::

  config.toml ──check (every key, before anything runs)──┐
  W/run/state.json (per stage: fingerprint, outputs, time)┤
      → crawl → fetch → embed → dedup → pseudolabel → tfds build → train → quantize
        → evaluate → (ablate) → review --no-app  → W/report.html
        each: skipped when its options, its inputs and everything before it are
        unchanged and its output is still there; else it runs, and so does every
        stage after it

A stage's fingerprint hashes its flags (defaults filled in), the content of the input
files they name, and the fingerprint of the stage before it, so a change anywhere
re-runs that stage and what follows, and nothing before it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
from typing import Any

from pipeline.cli import run_config
from pipeline.core.errors import UserError

STATE = ("run", "state.json")
REPORT = "report.html"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        description="Runs crawl, fetch, embed, dedup, pseudolabel, tfds build, train, "
        "quantize, evaluate (and ablate, review when enabled) from one TOML config, "
        "then writes W/report.html. A re-run skips every stage whose options and inputs "
        "are unchanged; a changed option re-runs that stage and everything after it. "
        "`camsdd run --print-config` writes every option with its default.",
    )
    add_run_arguments(parser)
    parser.add_argument("--config", help="the TOML config (see --print-config)")
    parser.add_argument(
        "--print-config", action="store_true", help="print every option with its default"
    )
    parser.set_defaults(func=run)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags ``run`` and ``demo`` share."""
    parser.add_argument("--work", help="work directory (default: the config's [run] work)")
    parser.add_argument(
        "--from",
        dest="start",
        metavar="STAGE",
        choices=run_config.STAGES,
        help="re-run from this stage on (earlier stages must have run)",
    )
    parser.add_argument(
        "--until", metavar="STAGE", choices=run_config.STAGES, help="stop after this stage"
    )


def run(args: argparse.Namespace) -> int:
    if args.print_config:
        sys.stdout.write(run_config.render_defaults())
        return 0
    if not args.config:
        raise UserError("camsdd run needs --config FILE (`camsdd run --print-config` > FILE)")
    return run_pipeline(run_config.load(args.config), args.work, args.start, args.until)


# ------------------------------------------------------------------ state


def _state_path(work: str) -> str:
    from pipeline.store import workdir

    return workdir.join(work, *STATE)


def load_state(work: str) -> dict[str, Any]:
    from pipeline.store import workdir

    path = _state_path(work)
    if not workdir.exists(path):
        return {}
    try:
        return json.loads(workdir.read_bytes(path))
    except ValueError:  # a damaged state only costs a re-run
        return {}


def _save_state(work: str, state: dict[str, Any]) -> None:
    from pipeline.store import workdir

    workdir.write_atomic(_state_path(work), json.dumps(state, indent=2).encode())


def _digest_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inputs(options: dict[str, Any]) -> dict[str, str]:
    """Content digests of the input files a stage's options name (a folder: its listing)."""
    found = {}
    for key, kind in run_config.INPUT_PATHS.items():
        path = options.get(key)
        if not path or "://" in path:
            continue
        if kind == "file":
            found[key] = _digest_file(path)
        else:
            listing = sorted(
                (os.path.relpath(os.path.join(d, f), path), os.path.getsize(os.path.join(d, f)))
                for d, _, files in os.walk(path)
                for f in files
            )
            found[key] = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return found


def fingerprint(stage: str, options: Any, upstream: str, shared: dict[str, Any]) -> str:
    """What a stage's output depends on: its options (defaults filled in), its inputs' content,
    the shared [run] values it reads, and everything before it (``upstream``)."""
    if stage in run_config.COMMAND_STAGES:
        defaults = {k: o.default for k, o in run_config.command_options(stage).items()}
        entries = options if stage == "crawl" else [options]
        effective = [{**defaults, **e, "inputs": _inputs(e)} for e in entries]
    else:
        effective = options
    payload = {"stage": stage, "options": effective, "upstream": upstream, "shared": shared}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _crawl_names(config: run_config.RunConfig) -> list[str]:
    return [e.get("name") or e["source"] for e in config.stages["crawl"]]


def outputs(stage: str, work: str, config: run_config.RunConfig) -> Any:
    """What a finished stage left (run ids, or whether its folder exists); None if nothing."""
    from pipeline.store import manifest, workdir

    if stage == "crawl":
        runs = manifest.crawl_runs(work)
        names = _crawl_names(config)
        if not all(name in runs for name in names):
            return None
        return {name: manifest.newest_complete_run(runs[name])[0] for name in names}
    if stage in ("fetch", "dedup", "pseudolabel"):
        latest = manifest.latest_run(work, stage)
        return latest[0] if latest else None
    paths = {
        "embed": ["embed"],
        "build": [f"tfds/camsdd/{c}" for c in config.stages["build"]["configs"]],
        "train": [f"models/{config.stages['train'].get('name', 'student')}/model.keras"],
        "quantize": [
            f"models/{config.stages['quantize'].get('name', 'student')}/model_int8.tflite"
        ],  # fmt: skip
        "evaluate": [f"models/{config.stages['evaluate'].get('name', 'student')}/evaluation"],
        "ablate": [f"models/{config.stages['ablate'].get('name', 'ablation')}/ablation.json"],
        "review": ["review/db"],
    }[stage]
    present = all(workdir.exists(workdir.join(work, p)) for p in paths)
    return True if present else None


# ------------------------------------------------------------------ the run


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run_pipeline(
    config: run_config.RunConfig,
    work: str | None = None,
    start: str | None = None,
    until: str | None = None,
    hooks: dict[str, Any] | None = None,
) -> int:
    """Runs the config's enabled stages (resuming); writes W/report.html; returns 0."""
    from pipeline import cli

    work = work or config.run.get("work")
    if not work:
        raise UserError(f"{config.path}: no work directory: give --work or [run] work")
    if hooks is None and config.demo:
        from pipeline.cli import demo

        hooks = demo.demo_hooks(config)
    hooks = hooks or {}
    stages = [s for s in run_config.STAGES if config.enabled[s]]
    for name, flag in (("--from", start), ("--until", until)):
        if flag and flag not in stages:
            raise UserError(f"{name} {flag}: that stage is disabled in {config.path}")
    state = load_state(work)
    previous = state.get("stages", {})
    if start:
        for stage in stages[: stages.index(start)]:
            if outputs(stage, work, config) is None:
                raise UserError(f"--from {start}: {stage} has not run in {work} yet")
    shared = {"labeled": config.run["labeled"]}
    upstream, forced, ran, started = "", False, [], time.monotonic()
    state = {"config": config.path, "work": work, "stages": dict(previous)}
    print(f"camsdd run: {config.path} -> {work} ({len(stages)} stages)", flush=True)
    with contextlib.ExitStack() as serving:
        for number, stage in enumerate(stages, 1):
            mark = fingerprint(stage, config.stages[stage], upstream, shared)
            upstream = mark
            before = start and stages.index(stage) < stages.index(start)
            recorded = previous.get(stage, {})
            unchanged = (
                recorded.get("fingerprint") == mark
                and recorded.get("outputs") is not None
                and recorded.get("outputs") == outputs(stage, work, config)
            )
            if before or (unchanged and not forced and stage != start):
                when = recorded.get("finished_at", "an earlier run")
                print(f"-- {number}/{len(stages)} {stage}: unchanged since {when}, skipped")
                continue
            forced = True
            _step(f"{number}/{len(stages)} {stage}")
            if "serve" in hooks and stage in ("crawl", "fetch"):
                hooks["serve"](serving)
            else:
                serving.close()  # the demo's loopback server: only while crawling and fetching
            began = time.monotonic()
            code = _run_stage(cli, stage, config, work)
            if code:
                print(f"error: {stage} failed (exit {code}); see above", file=sys.stderr)
                return code
            if stage in hooks:
                hooks[stage](work)
            state["stages"][stage] = {
                "fingerprint": mark,
                "outputs": outputs(stage, work, config),
                "seconds": round(time.monotonic() - began, 1),
                "finished_at": datetime.datetime.now().isoformat(timespec="seconds"),
            }
            _save_state(work, state)
            ran.append(stage)
            if stage == until:
                break
    if not ran:
        print("\nnothing to do: every stage is up to date", flush=True)
    _save_state(work, state)
    from pipeline.reports import run_report

    path = run_report.write(work, state, config)
    if "closing" in hooks:
        hooks["closing"](work)
    print(
        f"\nDone in {time.monotonic() - started:.0f} s ({len(ran)} of {len(stages)} stages "
        f"ran). Report: {path}",
        flush=True,
    )
    return 0


def _run_stage(cli, stage: str, config: run_config.RunConfig, work: str) -> int:
    from pipeline.store import workdir

    labeled = config.run["labeled"]
    workers = config.run["workers"]
    beam = [f"--direct_num_workers={workers}"] if workers > 1 else []
    data_dir = workdir.join(work, "tfds")
    if stage == "crawl":
        for entry in config.stages["crawl"]:
            command = ["crawl", "--work", work, *config.argv("crawl", entry)]
            code = _command(cli, command)
            if code:
                return code
        return 0
    if stage == "fetch":
        return _command(cli, ["fetch", "--work", work, *config.argv(stage), *beam])
    if stage in ("embed", "dedup"):
        return _command(cli, [stage, "--work", work, "--reference", labeled,
                              *config.argv(stage), *beam])  # fmt: skip
    if stage == "pseudolabel":
        return _command(cli, [stage, "--work", work, "--labeled", labeled,
                              *config.argv(stage), *beam])  # fmt: skip
    if stage in ("train", "quantize", "evaluate", "ablate"):
        return _command(cli, [stage, "--work", work, "--data_dir", data_dir, *config.argv(stage)])
    if stage == "build":
        return build(labeled, data_dir, config.stages["build"]["configs"], work, workers)
    if stage == "review":
        command = ["review", "--work", work, "--labeled", labeled, "--no-app"]
        print("$ camsdd " + " ".join(command), flush=True)
        # Its own process: the review points FiftyOne at W/review before importing it.
        return subprocess.run([sys.executable, "-m", "pipeline.cli", *command]).returncode
    raise AssertionError(stage)


def _command(cli, command: list[str]) -> int:
    print("$ camsdd " + " ".join(command), flush=True)
    return cli.main(command)


def build(labeled: str, data_dir: str, configs: list[str], work: str, workers: int) -> int:
    """``tfds build camsdd`` per config, as a user types it; then the split counts."""
    from pipeline.core import quiet
    from pipeline.stages import options as beam_options
    from pipeline.store import workdir

    extra = workdir.join(work, "pseudolabel")
    for config in configs:
        command = [
            sys.executable, "-m", "tensorflow_datasets.scripts.cli.main", "build", "camsdd",
            "--imports", "tfds_camsdd", "--config", config, "--manual_dir", labeled,
            "--data_dir", data_dir, "--overwrite",
            f"--beam_pipeline_options={beam_options.local_options(workers)}",
        ]  # fmt: skip
        env = dict(os.environ)
        shown = "tfds " + " ".join(command[3:])
        if config == "pseudo":
            env["CAMSDD_EXTRA_MANIFEST"] = extra
            shown = f"CAMSDD_EXTRA_MANIFEST={extra} {shown}"
        print(f"$ {shown}", flush=True)
        with subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        ) as child:
            for line in quiet.people_lines(child.stderr):
                sys.stderr.write(line)
        if child.returncode:
            return child.returncode
    from tfds_camsdd.camsdd import build_report

    for config in configs:
        report = build_report.load(_built(data_dir, config))
        written = {s: v["examples_written"] for s, v in report.get("splits", {}).items()}
        for split, extra in report.get("extra", {}).items():
            written[split] = extra["examples_written"]
        print(f"  camsdd/{config}: " + ", ".join(f"{s} {n}" for s, n in written.items()))
    return 0


def _built(data_dir: str, config: str) -> str:
    """The newest built version's folder of ``config``."""
    folder = os.path.join(data_dir, "camsdd", config)
    return os.path.join(folder, max(os.listdir(folder), key=_version_key))


def _version_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in name.split("."))
