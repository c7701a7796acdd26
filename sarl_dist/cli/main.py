"""The `sarl` command line."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from sarl_dist.config import ConfigError, dump_config, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field: --set learner.lr=1e-3 (repeatable)."),
]


def _log_warnings() -> None:
    """Warnings and errors on stderr, one line each, named by their module."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _preflight(cfg) -> None:
    """What stops a run before anything starts: an unknown task, a remote VLM without its
    API key or that refuses or does not answer one real query, an unreadable
    demonstration, a robot server that does not answer."""
    from sarl_dist.core.demos import load_demos
    from sarl_dist.envs import env_spec
    from sarl_dist.vlm import REMOTE, check_remote, make_proposer

    task = env_spec(cfg).task
    proposer = make_proposer(cfg)
    if cfg.vlm.backend in REMOTE:
        check_remote(cfg, proposer, task)
    if cfg.train.demos:
        load_demos(cfg.train.demos)
    if cfg.env.kind == "robot":
        from sarl_dist.envs.robot import robot_client

        robot_client(cfg.env).close()


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="Experiment YAML (see configs/).")] = None,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option(help="Run directory to create.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory.")] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address ('auto' inside `ray job submit`).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show live progress.")] = True,
    extend_to: Annotated[
        int | None,
        typer.Option(help="With --resume: continue up to this many training episodes."),
    ] = None,
) -> None:
    """Train (or evaluate a baseline) and write a run directory."""
    from sarl_dist.runtime.checkpoint import CheckpointError
    from sarl_dist.runtime.driver import RunError, run_training

    _log_warnings()
    if extend_to is not None and resume is None:
        _fail("--extend-to continues a run: give --resume DIR")
    if config is None and resume is None:
        _fail("give a CONFIG file (or --resume DIR)")
    run = _open_run(config, set_ or [], out, resume, extend_to)
    try:
        summary = run_training(
            run.cfg,
            run,
            address=address,
            resume=resume is not None,
            show_progress=progress,
            extend=extend_to is not None,
        )
    except CheckpointError as exc:
        _fail(f"cannot resume: {exc}")
    except RunError as exc:
        _fail(str(exc), code=1)
    shown = ("episodes", "final_eval_success", "last_eval_success", "wall_seconds")
    typer.echo(json.dumps({k: summary[k] for k in shown if k in summary}))
    if summary.get("failed"):
        _fail(f"{summary['interrupted']}; continue with: sarl train --resume {run.path}", code=1)
    if "interrupted" in summary:
        typer.echo(f"{summary['interrupted']}; continue with: sarl train --resume {run.path}")
    else:
        typer.echo(f"run directory: {run.path}")


def _open_run(
    config: Path | None,
    sets: list[str],
    out: Path | None,
    resume: Path | None,
    extend_to: int | None,
):
    """The run directory `sarl train` drives (created, or resumed), its config checked and
    everything a run needs before it starts present; a refusal is one line and an exit
    code (2: a usage error, 1: the world refused)."""
    from sarl_dist.robot.client import RobotError
    from sarl_dist.runtime.driver import os_error
    from sarl_dist.runtime.rundir import RunDir
    from sarl_dist.vlm.base import VLMUnusableError

    run = None
    try:
        if resume is not None:
            run = RunDir.open(resume, load_config(config, sets) if config or sets else None)
            if extend_to is not None:
                run.extend(extend_to)
            _preflight(run.cfg)
            return run
        cfg = load_config(config, sets)
        _preflight(cfg)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return RunDir.create(
            out or Path("runs") / f"{cfg.env.kind}-{cfg.method}-s{cfg.seed}-{stamp}", cfg
        )
    except (ValueError, RobotError, VLMUnusableError, OSError) as exc:
        if run is not None:
            run.close()  # the run directory is free again
        if isinstance(exc, OSError):  # an unwritable --out, a read-only file system
            _fail(os_error(exc), code=1)
        # ConfigError, an unset key variable, a run in use: exit 2; the rest are not usage
        _fail(str(exc), code=2 if isinstance(exc, ValueError) else 1)


@app.command()
def probe(
    prompts: Annotated[
        list[str] | None, typer.Argument(help="Prompt sequence; 'reset to home' is allowed.")
    ] = None,
    suite: Annotated[str, typer.Option(help="LIBERO suite.")] = "libero_10",
    task: Annotated[str, typer.Option(help="Task index or name.")] = "0",
    episodes: Annotated[
        int, typer.Option(help="Episodes, from the fixed init states 0..N-1.")
    ] = 20,
    video: Annotated[Path | None, typer.Option(help="Write one MP4 per episode here.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="Base config (default: libero10.yaml).")
    ] = None,
    set_: SetOption = None,
    prompts_flag: Annotated[
        bool, typer.Option("--prompts", help="Marks the start of the prompt list (optional).")
    ] = False,
) -> None:
    """Success rate of a fixed prompt sequence (or the task sentence alone) on one task."""
    from sarl_dist.runtime.probe import probe as run_probe

    _log_warnings()
    base = config or Path(__file__).resolve().parents[2] / "configs" / "libero10.yaml"
    overrides = [f"env.libero.suite={suite}", f"env.task={task}", *(set_ or [])]
    try:
        cfg = load_config(base if base.is_file() else None, overrides)
        summary = run_probe(cfg, list(prompts or []), episodes, video)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(summary))


@app.command("serve-vla")
def serve_vla(
    policy: Annotated[
        str,
        typer.Option(
            help="Which policy to serve: skill, skill_chain, neural (a stand-in for "
            "measuring serving, batched; its actions mean nothing) or openpi (vla.openpi_config "
            "and vla.openpi_checkpoint; needs openpi installed)."
        ),
    ] = "skill",
    config: Annotated[Path | None, typer.Option(help="Config whose env section it serves.")] = None,
    set_: SetOption = None,
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 to expose).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8000,
    api_key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the API key clients must send.")
    ] = None,
) -> None:
    """Serve a VLA over openpi's websocket protocol (what openpi-client speaks)."""
    from sarl_dist.vla import api_key, make_server_policy
    from sarl_dist.vla.server import PolicyServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    overrides = [*(set_ or []), *([f"vla.api_key_env={api_key_env}"] if api_key_env else [])]
    try:
        cfg = load_config(config, overrides)
        served, metadata = make_server_policy(policy, cfg)
        key = api_key(cfg)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    server = PolicyServer(
        served,
        host,
        port,
        metadata,
        api_key=key,
        drop_every=cfg.faults.drop_vla_every,
        max_batch=cfg.vla.max_batch,
        batch_wait_ms=cfg.vla.batch_wait_ms,
    )
    logging.info("serving %s on ws://%s:%d (GET /healthz)", policy, host, port)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


@app.command("robot-server")
def robot_server(
    backend: Annotated[
        str,
        typer.Option(
            help="libero (a simulated arm) or module:factory (your arm; importable from the "
            "current directory or the Python path)."
        ),
    ],
    config: Annotated[
        Path | None, typer.Option(help="Config whose env.robot.safety (and env.libero) to use.")
    ] = None,
    set_: SetOption = None,
    task: Annotated[int, typer.Option(help="LIBERO task index (the libero backend).")] = 0,
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 to expose).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8765,
    api_key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the API key clients must send.")
    ] = None,
) -> None:
    """Serve one arm to the learner over websockets, enforcing the safety limits."""
    from sarl_dist.robot.backends import BackendError, load_backend
    from sarl_dist.robot.safety import Safety
    from sarl_dist.robot.server import RobotServer
    from sarl_dist.wire import api_key_from_env

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    overrides = [*(set_ or []), *([f"env.robot.api_key_env={api_key_env}"] if api_key_env else [])]
    try:
        cfg = load_config(config, overrides)
        key = api_key_from_env(cfg.env.robot.api_key_env, "env.robot.api_key_env")
        safety = Safety(cfg.env.robot.safety)
        env_cfg = cfg.env
        if backend == "libero":
            env_cfg = cfg.env.model_copy(update={"kind": "libero", "task": task})
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # `module:factory` from here too, as with python -m
        robot = load_backend(backend, env_cfg)
    except (ConfigError, ValueError, BackendError) as exc:
        _fail(str(exc))

    def interrupt(signum, frame):  # `kill` stops the arm too, as Ctrl-C does: by way of
        # SIGINT, which asyncio's runner turns into cancelling the server's task (a
        # KeyboardInterrupt raised at any point inside the event loop can hang its shutdown)
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with `&`
    signal.signal(signal.SIGTERM, interrupt)
    try:
        server = RobotServer(robot, safety, host, port, api_key=key)
        logging.info("robot server %s on ws://%s:%d", robot.name, host, port)
        server.serve_forever()
    except KeyboardInterrupt:
        logging.info("interrupted: stopping the arm")
    except (ValueError, OSError) as exc:
        _fail(str(exc), code=1)
    finally:
        robot.stop()
        robot.close()


@app.command()
def propose(
    task: Annotated[str, typer.Option(help="The task sentence.")],
    image: Annotated[Path, typer.Option(help="The scene (PNG or JPEG), as the VLM will see it.")],
    backend: Annotated[str, typer.Option(help="template, gemini or openai.")] = "gemini",
    base_url: Annotated[
        str | None, typer.Option(help="Endpoint override (a proxy, a local server).")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="A prompt_cache.json (from a checkpoint); a full one is chosen from."),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Config whose vlm and env to use.")] = None,
    set_: SetOption = None,
) -> None:
    """Ask a proposer once and print its candidates as JSON (prompt work, checking a key)."""
    import asyncio

    import numpy as np
    from PIL import Image

    from sarl_dist.core.prompt_cache import PromptCache
    from sarl_dist.vlm import REMOTE, ask, make_proposer
    from sarl_dist.vlm.base import ProposalError, ProposalRequest

    _log_warnings()
    if base_url is not None and backend not in REMOTE:
        _fail(f"--base-url applies to {' and '.join(REMOTE)}, not to {backend}")
    endpoint = [f"vlm.{backend}.base_url={base_url}"] if base_url is not None else []
    try:
        cfg = load_config(config, [f"vlm.backend={backend}", *(set_ or []), *endpoint])
        prompts = PromptCache.load(cache) if cache else PromptCache(cfg.cache.capacity, [task])
        pixels = np.asarray(Image.open(image).convert("RGB"))
        with contextlib.redirect_stdout(sys.stderr):  # LIBERO prints to stdout; ours is JSON
            proposer = make_proposer(cfg)
    except (ConfigError, ValueError, KeyError, OSError) as exc:
        _fail(str(exc))
    request = ProposalRequest(
        task, pixels, tuple(prompts.texts), prompts.frozen, cfg.vlm.candidates
    )
    start = time.perf_counter()
    try:
        answer = asyncio.run(ask(proposer, request))
    except ProposalError as exc:
        _fail(str(exc), code=1)
    section, frozen = getattr(cfg.vlm, backend, None), prompts.frozen
    ids, refused = prompts.admit(answer.prompts)  # ids as a run's VLMService gives them
    out = {
        "backend": backend,
        "model": section.model if section is not None else None,
        "frozen_cache": frozen,
        "candidates": [{"id": i, "prompt": prompts.text(i)} for i in ids],
        "repaired": answer.repaired,
        "rejected": answer.rejected + len(refused),
        "tokens_in": answer.tokens_in,
        "tokens_out": answer.tokens_out,
        "seconds": round(time.perf_counter() - start, 3),
    }
    typer.echo(json.dumps(out, indent=1))


@app.command("show-config")
def show_config(
    config: Annotated[Path | None, typer.Argument(help="Experiment YAML.")] = None,
    set_: SetOption = None,
) -> None:
    """Print the resolved config (defaults, file, overrides) as YAML."""
    try:
        typer.echo(dump_config(load_config(config, set_ or [])), nl=False)
    except ConfigError as exc:
        _fail(str(exc))


@app.command()
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep YAML (see configs/sweeps/).")],
    address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
    out: Annotated[Path | None, typer.Option(help="Sweep directory (default: the file's).")] = None,
    resume: Annotated[
        bool, typer.Option(help="Finish a stopped sweep (the same file); ended runs stay.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show Tune's table and the sweep's state.")] = True,
) -> None:
    """Every combination of the sweep's grid as a full run, as a Ray Tune experiment, then
    the report."""
    from sarl_dist.experiments.sweep import load_sweep, run_sweep
    from sarl_dist.report.results import write_report

    _log_warnings()
    directory = None
    try:
        spec = load_sweep(sweep_file)
        directory = out or spec.out
        if directory is None:
            _fail("give --out or an `out:` in the sweep file")
        result = run_sweep(spec, directory, address, resume, show_progress=progress)
    except ConfigError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:  # a second Ctrl-C, past Tune's own handling of the first
        result = None
    if result is not None:
        typer.echo(json.dumps(result.counts()))
    if result is None or result.interrupted:
        again = f"sarl sweep {sweep_file} --out {directory} --resume"
        typer.echo(f"interrupted; continue with: {again}")
    with contextlib.suppress(FileNotFoundError):  # interrupted before any evaluation
        typer.echo(f"report: {write_report(directory)}")
    if result is not None and result.errors:
        raise typer.Exit(1)


@app.command()
def report(
    directory: Annotated[Path, typer.Argument(help="A sweep's or runs' directory.")],
    out: Annotated[Path | None, typer.Option(help="Where to write (default: DIRECTORY).")] = None,
) -> None:
    """Tables (Markdown, CSV) and plots of every run under DIRECTORY, seeds pooled."""
    from sarl_dist.report.results import write_report

    try:
        typer.echo(write_report(directory, out))
    except FileNotFoundError as exc:
        _fail(str(exc), code=1)


if __name__ == "__main__":
    app()
