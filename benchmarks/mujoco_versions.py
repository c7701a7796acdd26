"""LIBERO's physics and success checks under the installed MuJoCo, to compare versions.

    python benchmarks/mujoco_versions.py run --out mj-2.3.7.json
    python benchmarks/mujoco_versions.py run --actions mj-2.3.7.json --out mj-3.3.7.json
    python benchmarks/mujoco_versions.py compare mj-2.3.7.json mj-3.3.7.json ...

`run` measures, with whatever Python, MuJoCo and robosuite are installed:
- replay: for each LIBERO-10 task (`--tasks`) and init state 0..`--inits`-1, the project's
  reset (LIBERO's init state, then `settle_steps` no-ops), the objects' poses; the skill
  VLA closed loop under the task's atomic prompt sequence (its actions recorded, its
  success checked); then the same reset again and the recorded actions replayed open
  loop, the actions of the `--actions` file when given (the same low-level actions under
  every version), then 30 no-ops, with the objects' and fixtures' final poses,
  `check_success()` at the end and the first step at which it held. `--perturb EPS` adds
  seeded noise of scale EPS to the replayed actions: the spread a tiny change causes
  within one version.
- settle: for each `--settle SUITE:TASK` and init state 0..`--settle-inits`-1, after the
  project's reset: the objects' poses and tilts, the BDDL file's initial predicates
  (`(On bowl ramekin)`: what the task sentence presumes), and how far the objects still
  move in 100 further no-op steps (libero_spatial task 5's bowl stops seating on its
  ramekin from MuJoCo 3.4.0, RLinf issue 1460).
`compare` sets each file against the first (the reference) and prints JSON and tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from sarl_dist.config import load_config
from sarl_dist.envs import atomic_prompts, make_env
from sarl_dist.envs.libero import NOOP
from sarl_dist.report.bench import emit
from sarl_dist.runtime.probe import vla_for

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "libero10.yaml"
SETTLE_EXTRA = 100  # no-op steps after the reset that show whether objects came to rest
TAIL = 30  # no-op steps after a replay: a success a few steps later than the recording's counts


def _reset(env, init: int) -> None:
    """The project's reset, starting the gripper's command as a newly built env does.

    robosuite's soft reset keeps the Panda gripper's command integrator
    (`current_action`) from the episode before, which moves the fingers by millimetres
    during the settle steps; zeroed here, every measurement is independent of the ones
    before it, and a replay of recorded actions reproduces its recording exactly.
    """
    gripper = env._env.env.robots[0].gripper
    gripper.current_action = np.zeros(gripper.dof)
    env.reset(init, init_index=init)


def _poses(env) -> dict[str, list[float]]:
    """Movable objects (position, xyzw quaternion) and articulated fixtures (joint, part)."""
    p = env.privileged()
    return {
        **{f"obj:{k}": v.astype(float).round(6).tolist() for k, v in p["objects"].items()},
        **{f"jnt:{k}": v.astype(float).round(6).tolist() for k, v in p["joints"].items()},
    }


def _tilt(quat_xyzw: list[float]) -> float:
    """Degrees between a body's z axis and the world's."""
    x, y = quat_xyzw[0], quat_xyzw[1]
    return float(np.degrees(np.arccos(np.clip(1.0 - 2.0 * (x * x + y * y), -1.0, 1.0))))


def _premises(env) -> dict[str, bool]:
    """The BDDL file's initial predicates, evaluated by LIBERO's own predicate code."""
    domain = env._env.env
    out = {}
    for state in domain.parsed_problem["initial_state"]:
        if all(name in domain.object_states_dict for name in state[1:]):
            out[" ".join(state)] = bool(domain._eval_predicate(state))
    return out


def replay_rows(tasks: list[int], inits: int, actions: dict | None, perturb: float) -> list:
    rows = []
    for task in tasks:
        cfg = load_config(CONFIG, [f"env.task={task}"])
        env = make_env(cfg)
        prompts = atomic_prompts(cfg)
        with vla_for(cfg, cfg.seed, env.spec.action_dim) as vla:
            for i in range(inits):
                _reset(env, i)
                settled = _poses(env)
                recorded: list[list[float]] = []
                step = env.step

                def recording(action, step=step, recorded=recorded):
                    recorded.append(np.asarray(action, dtype=np.float64).tolist())
                    step(action)

                env.step = recording
                for prompt in prompts:
                    if env.run_prompt(prompt, vla).terminated:
                        break
                env.step = step
                closed_success, closed_poses = env.success(), _poses(env)
                sequence = actions[f"{task}/{i}"] if actions is not None else recorded
                noise = np.random.default_rng(task * 1000 + i).normal(
                    0.0, perturb, (len(sequence), 7)
                )
                _reset(env, i)
                first, start = None, time.perf_counter()
                tail = np.tile(NOOP, (TAIL, 1))
                for t, action in enumerate(np.concatenate([np.asarray(sequence) + noise, tail])):
                    if t == len(sequence):
                        replay_poses = _poses(env)
                    env.step(action)
                    if first is None and env.success():
                        first = t + 1
                rows.append(
                    {
                        "task": task,
                        "init": i,
                        "settled": settled,
                        "closed_loop_success": closed_success,
                        "actions": recorded,
                        "replayed": len(sequence),
                        # its own recorded actions, replayed, land exactly where it ended
                        "replay_is_recording": (
                            replay_poses == closed_poses if actions is None else None
                        ),
                        "replay_seconds": round(time.perf_counter() - start, 2),
                        "final": _poses(env),
                        "success_end": bool(env._env.check_success()),
                        "first_success_step": first,
                    }
                )
                print(
                    f"replay task {task} init {i}: closed loop {closed_success}, "
                    f"replay first success {first}",
                    file=sys.stderr,
                    flush=True,
                )
        env.close()
    return rows


def settle_rows(targets: list[str], inits: int) -> list:
    rows = []
    for target in targets:
        suite, task = target.split(":")
        cfg = load_config(CONFIG, [f"env.libero.suite={suite}", f"env.task={task}"])
        env = make_env(cfg)
        for i in range(min(inits, len(env.init_states))):
            _reset(env, i)
            settled, premises = _poses(env), _premises(env)
            for _ in range(SETTLE_EXTRA):
                env.step(NOOP)
            rows.append(
                {
                    "target": target,
                    "init": i,
                    "settled": settled,
                    "premises": premises,
                    "later": _poses(env),
                    "success": bool(env._env.check_success()),
                }
            )
        env.close()
    return rows


def versions() -> dict[str, str]:
    import mujoco
    import robosuite

    return {
        "python": platform.python_version(),
        "mujoco": mujoco.__version__,
        "robosuite": robosuite.__version__,
        "numpy": np.__version__,
    }


def run(args: argparse.Namespace) -> None:
    actions = None
    if args.actions is not None:
        reference = json.loads(args.actions.read_text())
        actions = {f"{r['task']}/{r['init']}": r["actions"] for r in reference["replay"]}
    result = {
        "versions": versions(),
        "perturb": args.perturb,
        "replay": replay_rows(args.tasks, args.inits, actions, args.perturb),
        "settle": settle_rows(args.settle, args.settle_inits),
    }
    args.out.write_text(json.dumps(result))
    print(json.dumps(result["versions"]))


def _pos_diff_mm(a: dict, b: dict) -> float:
    """The largest position difference between two pose sets, in mm (objects and parts)."""
    worst = 0.0
    for k in a:
        va, vb = np.asarray(a[k]), np.asarray(b[k])
        pos = slice(0, 3) if k.startswith("obj:") else slice(1, 4)
        worst = max(worst, float(np.linalg.norm(va[pos] - vb[pos])))
    return round(1000 * worst, 2)


def _object_premises(row: dict) -> tuple[int, int]:
    """Held and evaluated initial predicates between two movable objects (a bowl on a
    ramekin); those naming regions test the placement sampler's areas, not the physics."""
    ours = [
        held
        for predicate, held in row["premises"].items()
        if all(f"obj:{name}" in row["settled"] for name in predicate.split()[1:])
    ]
    return sum(ours), len(ours)


def _tilt_diff(a: dict, b: dict) -> float:
    return round(
        max(abs(_tilt(a[k][3:7]) - _tilt(b[k][3:7])) for k in a if k.startswith("obj:")), 2
    )


def label(result: dict) -> str:
    v = result["versions"]
    perturbed = f" +{result['perturb']:g} noise" if result["perturb"] else ""
    return f"mujoco {v['mujoco']} / py {v['python']}{perturbed}"


def compare(files: list[Path]) -> None:
    results = [json.loads(f.read_text()) for f in files]
    ref = results[0]
    ref_replay = {(r["task"], r["init"]): r for r in ref["replay"]}
    ref_settle = {(r["target"], r["init"]): r for r in ref["settle"]}
    replay, settle = [], []
    for res in results:
        rows = [(r, ref_replay[r["task"], r["init"]]) for r in res["replay"]]
        if rows:
            final = [_pos_diff_mm(r["final"], q["final"]) for r, q in rows]
            replay.append(
                {
                    "stack": label(res),
                    "episodes": len(rows),
                    "settled pos diff max mm": max(
                        _pos_diff_mm(r["settled"], q["settled"]) for r, q in rows
                    ),
                    "closed-loop success": sum(r["closed_loop_success"] for r, _ in rows),
                    "replay = own recording": (
                        "-"
                        if rows[0][0]["replay_is_recording"] is None
                        else sum(bool(r["replay_is_recording"]) for r, _ in rows)
                    ),
                    # reached at some step, as an episode counts it (it ends on success)
                    "replay success": sum(bool(r["first_success_step"]) for r, _ in rows),
                    "same outcome": sum(
                        bool(r["first_success_step"]) == bool(q["first_success_step"])
                        for r, q in rows
                    ),
                    "success held after no-ops": sum(r["success_end"] for r, _ in rows),
                    "first-success step diff max": max(
                        (
                            abs(r["first_success_step"] - q["first_success_step"])
                            for r, q in rows
                            if r["first_success_step"] and q["first_success_step"]
                        ),
                        default=0,
                    ),
                    "final pos diff median mm": round(float(np.median(final)), 2),
                    "final pos diff max mm": max(final),
                    "replay s/episode": round(
                        float(np.mean([r["replay_seconds"] for r, _ in rows])), 2
                    ),
                }
            )
        for target in dict.fromkeys(r["target"] for r in res["settle"]):
            rows = [
                (r, ref_settle[r["target"], r["init"]])
                for r in res["settle"]
                if r["target"] == target
            ]
            pos = [_pos_diff_mm(r["settled"], q["settled"]) for r, q in rows]
            tilt = [_tilt_diff(r["settled"], q["settled"]) for r, q in rows]
            settle.append(
                {
                    "stack": label(res),
                    "task": target,
                    "inits": len(rows),
                    "object-on-object premises": "{}/{}".format(
                        *np.sum([_object_premises(r) for r, _ in rows], axis=0)
                    ),
                    "tilt max deg": max(
                        round(_tilt(v[3:7]), 2)
                        for r, _ in rows
                        for k, v in r["settled"].items()
                        if k.startswith("obj:")
                    ),
                    "pos diff max mm": max(pos),
                    "tilt diff max deg": max(tilt),
                    "drift max mm": max(_pos_diff_mm(r["later"], r["settled"]) for r, _ in rows),
                }
            )
    if replay:
        emit(f"replay of the actions of {files[0].name}, against it", replay)
    if settle:
        emit(f"settle, against {files[0].name}", settle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="measure the installed stack")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--actions", type=Path, help="a reference run whose actions are replayed")
    r.add_argument("--tasks", type=int, nargs="*", default=[0, 4, 5, 6, 7])
    r.add_argument("--inits", type=int, default=5)
    r.add_argument("--perturb", type=float, default=0.0)
    r.add_argument("--settle", nargs="*", default=["libero_spatial:5", "libero_10:0"])
    r.add_argument("--settle-inits", type=int, default=50)
    c = sub.add_parser("compare", help="set runs against the first")
    c.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "run":
        run(args)
    else:
        compare(args.files)


if __name__ == "__main__":
    main()
