"""The robot side installs light: `pip install .` in a fresh virtual environment (no
torch, Ray or LIBERO) serves a gym-style arm with `sarl robot-server`, and the project's
robot client (the learner's side) drives it."""

import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import numpy as np
import pytest

from sarl_dist.robot.client import RobotClient
from sarl_dist.testing import free_ports, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
ARM = textwrap.dedent(
    """
    from types import SimpleNamespace

    import numpy as np


    class Arm:  # a gym-style env: reset() -> obs, step(a) -> (obs, reward, done, info)
        action_space = SimpleNamespace(shape=(7,))
        observation_space = {"state": SimpleNamespace(shape=(7,))}

        def __init__(self):
            self.pos = np.zeros(3)

        def obs(self):
            image = np.full((16, 16, 3), 90, np.uint8)
            state = np.concatenate([self.pos, np.zeros(4)]).astype(np.float32)
            return {"image": image, "wrist_image": image, "state": state}

        def reset(self):
            self.pos[:] = 0
            return self.obs()

        def step(self, action):
            self.pos += 0.01 * np.asarray(action[:3])
            return self.obs(), 0.0, False, {}


    def make(env_cfg):
        return Arm()
    """
)


@pytest.fixture(scope="module")
def robot_venv(tmp_path_factory):
    """A fresh environment with only the robot side of the package."""
    root = tmp_path_factory.mktemp("robot-pc")
    venv.create(root / "venv", with_pip=True)
    python = root / "venv" / "bin" / "python"
    proc = subprocess.run(
        [python, "-m", "pip", "install", "-q", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (root / "arm.py").write_text(ARM)
    return root, python


def test_the_robot_side_needs_no_torch_ray_or_libero(robot_venv):
    _, python = robot_venv
    for heavy in ("torch", "ray", "libero", "openpi_client", "cv2"):
        proc = subprocess.run([python, "-c", f"import {heavy}"], capture_output=True, timeout=60)
        assert proc.returncode != 0, f"{heavy} is installed on the robot side"


def test_the_light_install_serves_a_gym_arm_to_the_robot_client(robot_venv):
    root, python = robot_venv
    (port,) = free_ports(1)
    sarl = python.parent / "sarl"
    server = subprocess.Popen(
        [sarl, "robot-server", "--backend", "arm:make", "--port", str(port)],
        cwd=root,  # arm.py is importable from here
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(port, server)
        client = RobotClient(f"ws://127.0.0.1:{port}", connect_timeout=10)
        assert client.metadata["robot"] == "Arm" and client.metadata["action_dim"] == 7
        assert client.begin_episode(0)["observation"]["images"]["primary"].shape == (16, 16, 3)
        moved = client.execute(np.tile([1.0, 0, 0, 0, 0, 0, -1], (5, 1)).astype(np.float32))
        assert moved["steps"] == 5
        assert moved["observation"]["eef_pos"][0] == pytest.approx(0.05, abs=1e-6)
        client.close()
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0, server.stderr.read()[-2000:]
    assert sys.executable not in str(sarl)  # it ran from the light environment
