"""The `sarl` command line."""

from __future__ import annotations

import json
import logging
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


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


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
) -> None:
    """Train (or evaluate a baseline) and write a run directory."""
    from sarl_dist.envs import env_spec
    from sarl_dist.runtime.driver import RunError, run_training
    from sarl_dist.runtime.rundir import RunDir

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if resume is not None:
            cfg = load_config(config, set_ or []) if config or set_ else None
            run = RunDir.open(resume, cfg)
            cfg = run.cfg
            env_spec(cfg)
        else:
            if config is None:
                _fail("give a CONFIG file (or --resume DIR)")
            cfg = load_config(config, set_ or [])
            env_spec(cfg)  # an unknown task stops here, before anything starts
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = out or Path("runs") / f"{cfg.env.kind}-{cfg.method}-s{cfg.seed}-{stamp}"
            run = RunDir.create(out, cfg)
    except ConfigError as exc:
        _fail(str(exc))
    try:
        summary = run_training(
            cfg, run, address=address, resume=resume is not None, show_progress=progress
        )
    except RunError as exc:
        _fail(str(exc), code=1)
    typer.echo(
        json.dumps({k: summary[k] for k in ("episodes", "final_eval_success", "wall_seconds")})
    )
    typer.echo(f"run directory: {run.path}")


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


if __name__ == "__main__":
    app()
