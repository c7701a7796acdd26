"""Typed run configuration: one YAML per experiment, `--set a.b=value` overrides.

Every value SARL did not publish (temperature, learning rate, update-to-data ratio,
target update, batch size) is a field here with the default we chose and why.
Configs are frozen and reject unknown keys, so a typo stops a run before anything starts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sarl_dist.methods import METHODS
from sarl_dist.prompt_text import clean_prompt

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration problem, with the dotted field name in the message."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SkillChainConfig(_Section):
    """The synthetic test bed (see sarl_dist/envs/skill_chain.py)."""

    stages: int = Field(3, ge=1, le=8, description="Hidden stages the task needs, in order.")
    p_canonical: float = Field(
        0.95, ge=0, le=1, description="Chance the VLA completes a skill named canonically."
    )
    p_paraphrase: float = Field(
        0.4, ge=0, le=1, description="Chance it completes a skill named by a known paraphrase."
    )
    p_undo: float = Field(
        0.8, ge=0, le=1, description="Chance the inverse of the last completed skill undoes it."
    )
    p_helpful: float = Field(
        0.85,
        ge=0,
        le=1,
        description="Chance the proposer's candidates include the canonical next step.",
    )
    step_seconds: float = Field(
        0.0, ge=0, description="Simulated physics cost per low-level step (benchmarks)."
    )


class LiberoConfig(_Section):
    """LIBERO scenes (sarl_dist/envs/libero.py)."""

    suite: str = Field("libero_10", description="Benchmark suite: libero_10, libero_90, ...")
    init_state: int | None = Field(
        None, ge=0, description="Fixed init state index; None draws one per episode seed."
    )
    camera_size: int = Field(256, ge=32, description="Render size of agentview / wrist cameras.")
    vla_image_size: int = Field(224, ge=32, description="Images sent to the VLA (padded).")
    settle_steps: int = Field(10, ge=0, description="No-op steps after reset (openpi: 10).")
    renderer: Literal["auto", "egl", "osmesa", "egl_surfaceless"] = Field(
        "auto", description="Headless OpenGL backend; auto picks EGL on GPU nodes."
    )
    vla_images: bool = Field(
        False, description="Render camera images for the VLA (pi0.5 needs them; the skill VLA not)."
    )
    privileged: bool = Field(
        True, description="Send object/fixture poses to the VLA (the skill VLA acts from them)."
    )
    home_tolerance: float = Field(0.01, gt=0, description="Reset-to-home stops within this (m).")
    stock_stepping: bool = Field(
        False,
        description="robosuite's stepping as shipped: mj_forward twice per substep on the same "
        "state (false: once, 7-19% faster, the same successes; only the solver's warm start "
        "differs, so trajectories match stock to solver precision, not bit for bit).",
    )


class RobotSafetyConfig(_Section):
    """Limits the robot server enforces on every action, whatever the VLA sends.

    Actions are end-effector deltas (first three: translation) plus the rest (rotation,
    gripper); each is clipped to its bounds, and a translation that would push the end
    effector further out of the workspace box is zeroed on that axis. Every change is
    logged by the server and returned with the step.
    """

    action_low: tuple[float, ...] = Field(
        (-1.0,) * 7, description="Per-dimension lower bound of an action (length action_dim)."
    )
    action_high: tuple[float, ...] = Field(
        (1.0,) * 7, description="Per-dimension upper bound of an action (length action_dim)."
    )
    workspace_low: tuple[float, float, float] = Field(
        (-10.0, -10.0, -10.0), description="Lower corner (m) of the box the end effector stays in."
    )
    workspace_high: tuple[float, float, float] = Field(
        (10.0, 10.0, 10.0), description="Upper corner (m) of the box the end effector stays in."
    )
    max_episode_seconds: float = Field(
        120.0, gt=0, description="Wall-clock cap on one episode; then the arm stops."
    )
    max_chunk: int = Field(50, ge=1, description="Most actions the server takes in one command.")

    @model_validator(mode="after")
    def _ordered(self) -> RobotSafetyConfig:
        if len(self.action_low) != len(self.action_high):
            raise ValueError("action_low and action_high must have the same length")
        for name, lo, hi in (
            ("action", self.action_low, self.action_high),
            ("workspace", self.workspace_low, self.workspace_high),
        ):
            if any(a > b for a, b in zip(lo, hi, strict=True)):
                raise ValueError(f"{name}_low must not exceed {name}_high in any dimension")
        return self


class RobotConfig(_Section):
    """One real (or simulated) arm behind the robot server (docs/robot.md)."""

    address: str = Field(
        "ws://127.0.0.1:8765", description="The robot server (sarl robot-server) as ws://host:port."
    )
    api_key_env: str | None = Field(
        None, description="Environment variable holding the robot server's API key."
    )
    connect_timeout: float = Field(30.0, gt=0, description="Seconds to keep retrying a connect.")
    request_timeout: float = Field(
        30.0, gt=0, description="Seconds one command (a step, going home) may take."
    )
    action_dim: int = Field(7, ge=1, description="Width of one action; the server must agree.")
    q_camera: str = Field("primary", description="Camera the Q-ensemble and the VLM look at.")
    vla_keys: dict[str, str] = Field(
        {
            "observation/image": "images.primary",
            "observation/wrist_image": "images.wrist",
            "observation/state": "state",
        },
        description="The VLA's observation keys and the robot fields that fill them "
        "(images.NAME or state); match your policy server's config.",
    )
    vla_image_size: int | None = Field(
        224, ge=32, description="Images for the VLA are resized with padding to this; None: as is."
    )
    pass_extra: bool = Field(
        False,
        description="Forward the server's `extra` fields (a simulator's privileged poses) to the "
        "VLA: the skill VLA acting on the simulated robot needs them; a real robot has none.",
    )
    reward_classifier: str | None = Field(
        None,
        description="module:function(observation) -> probability of success, checked after every "
        "step; at or above classifier_threshold the episode ends and it is the default label.",
    )
    classifier_threshold: float = Field(0.5, ge=0, le=1)
    ask_labels: bool = Field(
        True, description="Ask the person for each episode's success (else the classifier decides)."
    )
    videos: bool = Field(True, description="Save every episode as MP4 under the run's videos/.")
    widowx: str = Field(
        "localhost:5556",
        description="host:port of Bridge's WidowX action server, for the robot server's "
        "sarl_dist.robot.widowx backend (on the robot PC).",
    )
    safety: RobotSafetyConfig = RobotSafetyConfig()

    @model_validator(mode="after")
    def _consistent(self) -> RobotConfig:
        if not self.address.startswith(("ws://", "wss://")):
            raise ValueError(f"address {self.address!r} must start with ws:// or wss://")
        if len(self.safety.action_low) != self.action_dim:
            raise ValueError(
                f"safety.action_low has {len(self.safety.action_low)} values, "
                f"action_dim is {self.action_dim}"
            )
        for key, field in self.vla_keys.items():
            if field != "state" and not field.startswith("images."):
                raise ValueError(f"vla_keys[{key!r}]={field!r}: use images.NAME or state")
        if not self.ask_labels and self.reward_classifier is None:
            raise ValueError("ask_labels=false needs a reward_classifier to decide success")
        return self


class EnvConfig(_Section):
    kind: Literal["skill_chain", "libero", "robot"] = "skill_chain"
    task: int | str = Field(
        0, description="Task index or name within the environment; the task sentence for a robot."
    )
    max_decisions: int = Field(
        5, ge=1, description="Semantic decisions per episode (H; 600/120 = 5 in LIBERO)."
    )
    decision_steps: int = Field(
        10, ge=1, description="Low-level steps the VLA runs per semantic decision."
    )
    bootstrap_truncated: bool = Field(
        True,
        description="An episode cut short (the decision cap, a robot's time cap or stop) is a "
        "time limit, not a failure state: its last transition bootstraps from its next state.",
    )
    skill_chain: SkillChainConfig = SkillChainConfig()
    libero: LiberoConfig = LiberoConfig()
    robot: RobotConfig = RobotConfig()

    @model_validator(mode="after")
    def _robot_task_is_a_sentence(self) -> EnvConfig:
        if self.kind == "robot" and not (isinstance(self.task, str) and self.task.strip()):
            raise ValueError("task: a robot's task is its sentence, e.g. 'put the carrot in a pot'")
        return self


class VLAConfig(_Section):
    """How workers reach the VLA.

    skill_chain: the test bed's VLA, in process. skill: the run serves a VLA itself
    (`replicas` VLAServer actors speaking openpi's protocol, each in process or as a
    `server_command` subprocess) and workers connect to it exactly as to pi0.5.
    websocket: existing openpi policy servers at `addresses` (or host:port).
    Worker i starts on server i mod N; a server it loses and cannot reach again within
    `failover_after` seconds is left for another live one (docs/scaling.md).
    """

    kind: Literal["skill_chain", "skill", "websocket"] = "skill_chain"
    replan_steps: int = Field(
        5, ge=1, description="Actions executed from each chunk before asking again (openpi: 5)."
    )
    host: str = Field("127.0.0.1", description="Policy server host (kind=websocket).")
    port: int = Field(8000, ge=1, le=65535, description="Policy server port (kind=websocket).")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the server's API key."
    )
    addresses: tuple[str, ...] = Field(
        (),
        description="host:port of each policy server (kind=websocket); empty: host and port.",
    )
    connect_timeout: float = Field(60.0, gt=0, description="Seconds to keep retrying a connect.")
    failover_after: float = Field(
        10.0,
        ge=0,
        description="Seconds a worker retries a server it lost before moving to another live "
        "one (several servers); the episode in progress is run again either way.",
    )
    served_policy: Literal["skill", "skill_chain"] = Field(
        "skill",
        description="What the run's own servers serve (kind=skill): the LIBERO skill VLA, or "
        "the test bed's VLA over the same protocol (fast tests of serving and failover).",
    )
    replicas: int = Field(
        1, ge=1, description="Policy servers the run starts (kind=skill), one Ray actor each."
    )
    server_command: tuple[str, ...] = Field(
        (),
        description="Command each replica runs as its subprocess, with {host}, {port}, {policy} "
        "and {config} (the run's config as a YAML file) filled in, e.g. sarl serve-vla --config "
        "{config} --policy {policy} --port {port}, or openpi's scripts/serve_policy.py; it is "
        "ready when GET /healthz answers 200. Empty: served inside the actor's process.",
    )
    server_start_timeout: float = Field(
        600.0, gt=0, description="Seconds a server subprocess may take to answer /healthz."
    )
    max_batch: int = Field(
        8,
        ge=1,
        le=256,
        description="Most concurrent requests a policy server answers with one batched call "
        "(policies offering infer_batch; others are served one request at a time).",
    )
    batch_wait_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="Longest a request waits at an idle policy server for other connections' "
        "requests to batch with (requests arriving while it computes are batched without "
        "waiting; with one connection, none waits).",
    )
    neural_width: int = Field(
        2048, ge=8, description="Neural stand-in (--policy neural): width of its layers."
    )
    neural_blocks: int = Field(8, ge=1, description="Neural stand-in: residual blocks.")
    openpi_config: str = Field(
        "pi05_libero", description="openpi training config `sarl serve-vla --policy openpi` loads."
    )
    openpi_checkpoint: str = Field(
        "gs://openpi-assets/checkpoints/pi05_libero",
        description="Its checkpoint (a directory or gs:// address, as openpi takes it).",
    )
    server_bind: str = Field(
        "127.0.0.1",
        description="Interface the run's own servers bind; 0.0.0.0 lets workers on other nodes "
        "reach them (they are then given the node's IP).",
    )
    server_cpus: float = Field(0.25, gt=0, description="Ray CPUs of each of the run's VLA servers.")
    server_gpus: float = Field(0.0, ge=0, description="Ray GPUs of each of the run's VLA servers.")
    server_resources: dict[str, float] = Field(
        {},
        description="Ray custom resources each of the run's VLA servers declares, e.g. "
        "{vla_server: 1}, which the cluster configs advertise once per GPU.",
    )
    action_noise: float = Field(
        0.05, ge=0, description="Skill VLA: std of the noise on its motion commands."
    )
    p_partial: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Skill VLA: share of compound prompts that run their first clause.",
    )
    p_zero_shot: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Skill VLA: chance (per episode, drawn from the scene) that an untaught "
        "sentence whose first clause it reads (p_partial) is carried on right: a compound's "
        "remaining clauses once its first shows done, a near-copy read by its own words. "
        "With p_partial 0.2, the sentence alone succeeds in 0.02-0.30 of LIBERO-10's "
        "evaluation episodes on every task (docs/skill_vla.md).",
    )

    @field_validator("addresses")
    @classmethod
    def _host_port(cls, addresses: tuple[str, ...]) -> tuple[str, ...]:
        for item in addresses:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"{item!r} is not host:port with a port in 1..65535")
        return addresses

    @field_validator("server_command")
    @classmethod
    def _names_its_port(cls, command: tuple[str, ...]) -> tuple[str, ...]:
        """A server whose port the replica does not choose could not be found."""
        if command and not any("{port}" in part for part in command):
            raise ValueError("the command must contain {port} (the replica picks a free one)")
        return command

    @field_validator("server_resources")
    @classmethod
    def _custom_only(cls, resources: dict[str, float]) -> dict[str, float]:
        """Ray takes CPUs and GPUs as their own options; a negative amount is a typo."""
        for name, amount in resources.items():
            if name in ("CPU", "GPU", "memory") or amount <= 0:
                raise ValueError(
                    f"{name}={amount}: give custom resources with positive amounts "
                    "(CPUs and GPUs are server_cpus and server_gpus)"
                )
        return resources

    @model_validator(mode="after")
    def _servers_fit_the_kind(self) -> VLAConfig:
        if self.addresses and self.kind != "websocket":
            raise ValueError(f"vla.addresses applies to kind=websocket, not {self.kind}")
        if (self.replicas > 1 or self.server_command) and self.kind != "skill":
            raise ValueError(
                f"vla.replicas and vla.server_command apply to kind=skill, not {self.kind}"
            )
        return self


class GeminiConfig(_Section):
    """Gemini through google-genai; the key comes only from GEMINI_API_KEY or GOOGLE_API_KEY."""

    model: str = Field("gemini-3-flash-preview", description="Model name (SARL's).")
    base_url: str | None = Field(
        None, description="Endpoint override (a proxy, a test server); None: Google's."
    )
    api_version: str | None = Field(
        None, description="API version in the route (v1, v1beta); None: the SDK's default."
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature; None: the model's default."
    )
    thinking_level: Literal["minimal", "low", "medium", "high"] | None = Field(
        None, description="Gemini 3 thinking depth; None: the model's default."
    )
    usd_per_mtok_in: float = Field(
        0.5, ge=0, description="Price per million input tokens, for the cost estimate only."
    )
    usd_per_mtok_out: float = Field(
        3.0, ge=0, description="Price per million output (and thinking) tokens, likewise."
    )


class OpenAICompatConfig(_Section):
    """Any OpenAI-compatible chat endpoint serving a vision-language model (vLLM, Ollama)."""

    model: str = Field("Qwen/Qwen2.5-VL-7B-Instruct", description="Model name the server knows.")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="The server's /v1 URL.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the key; None: a local server, no key."
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature; None: the server's default."
    )
    usd_per_mtok_in: float = Field(0.0, ge=0, description="Price per million input tokens.")
    usd_per_mtok_out: float = Field(0.0, ge=0, description="Price per million output tokens.")


class VLMConfig(_Section):
    """Who proposes candidate prompts, and how the VLMService talks to a remote VLM."""

    backend: Literal["skill_chain", "template", "gemini", "openai"] = Field(
        "skill_chain",
        description="Proposer: the test bed's, templates from task and scene (offline), "
        "Gemini, or an OpenAI-compatible server.",
    )
    candidates: int = Field(4, ge=1, description="Candidate prompts per query (4 in sim).")
    refresh_steps: int | None = Field(
        None,
        ge=1,
        description="Low-level steps between candidate refreshes; in between, decisions choose "
        "among the last proposal (SARL's WidowX: decide every step, refresh every 20). "
        "None: a new proposal at every decision.",
    )
    timeout: float = Field(30.0, gt=0, description="Seconds one HTTP attempt may take.")
    attempts: int = Field(
        4, ge=1, description="HTTP attempts per query (retries on 408, 429, 5xx and timeouts)."
    )
    retry_delay: float = Field(
        1.0, ge=0, description="Seconds before the first retry; doubles after each, plus jitter."
    )
    retry_max_delay: float = Field(16.0, ge=0, description="Longest wait between two attempts.")
    deadline: float = Field(
        90.0, gt=0, description="Seconds a query may take in all; then candidates come from cache."
    )
    concurrency: int = Field(8, ge=1, description="Backend calls in flight at once.")
    max_refusals: int = Field(
        3,
        ge=1,
        description="Consecutive refused queries (HTTP 400/401/403/404: a bad key, an unknown "
        "model) that stop a run, checkpointed; other failures fall back to the cache.",
    )
    batch_window: float = Field(
        0.02, ge=0, description="Seconds a remote batch gathers requests before it is sent."
    )
    response_store: str | None = Field(
        None,
        description="Answer store shared across runs (JSON lines); None: the run directory's.",
    )
    gemini: GeminiConfig = GeminiConfig()
    openai: OpenAICompatConfig = OpenAICompatConfig()

    @model_validator(mode="after")
    def _deadline_covers_an_attempt(self) -> VLMConfig:
        if self.deadline < self.timeout:
            raise ValueError(
                f"vlm.deadline={self.deadline} is shorter than one attempt "
                f"(vlm.timeout={self.timeout})"
            )
        return self


class PromptCacheConfig(_Section):
    capacity: int = Field(32, ge=2, description="K: prompt slots, the one-hot width of Q.")
    seed_prompts: tuple[str, ...] = Field(
        (), description="Prompts entered before learning (e.g. demo instructions)."
    )
    seed_task_prompt: bool = Field(True, description="Enter the task sentence itself first.")
    include_reset: bool = Field(
        True, description="Offer reset-to-home among the candidates at every decision."
    )

    @field_validator("seed_prompts")
    @classmethod
    def _prompts_are_usable(cls, prompts: tuple[str, ...]) -> tuple[str, ...]:
        """An empty or oversized seed prompt stops the run here, not inside an actor."""
        for i, text in enumerate(prompts):
            try:
                clean_prompt(text)
            except ValueError as exc:
                raise ValueError(f"seed prompt {i}: {exc}") from None
        return prompts


class QConfig(_Section):
    ensemble: int = Field(10, ge=1, description="Q-networks in the ensemble (SARL: 10).")
    hidden: int = Field(128, ge=8, description="Width of the MLP body (SARL: 128).")
    layers: int = Field(3, ge=1, description="Hidden layers of the MLP body (SARL: 3).")
    image_features: int = Field(64, ge=8, description="CNN output features per member.")


class TargetConfig(_Section):
    mode: Literal["soft", "hard"] = Field("soft", description="Polyak averaging or copies.")
    tau: float = Field(0.02, gt=0, le=1, description="Soft update rate per gradient step.")
    period: int = Field(200, ge=1, description="Gradient steps between hard copies.")


class LearnerConfig(_Section):
    lr: float = Field(3e-4, gt=0, description="Adam learning rate.")
    batch_size: int = Field(64, ge=1, description="Transitions per gradient step.")
    gamma: float | None = Field(
        None, gt=0, lt=1, description="Discount; None means 1 - 1/H (SARL)."
    )
    temperature: float = Field(
        0.1, gt=0, description="Softmax temperature over Q for the behaviour policy."
    )
    updates_per_step: float = Field(
        2.0, ge=0, description="Gradient steps per stored transition (update-to-data ratio)."
    )
    warmup: int = Field(64, ge=0, description="Transitions stored before the first update.")
    replay_capacity: int = Field(100_000, ge=1)
    grad_clip: float = Field(
        10.0, gt=0, description="Max gradient norm per step, of each ensemble member on its own."
    )
    publish_every: int = Field(
        20, ge=1, description="Gradient steps between weight publications to workers."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "cpu",
        description="Where the Learner trains: cuda asks its placement bundle for one GPU; auto "
        "is cuda when torch on the driver's machine sees a GPU, else cpu.",
    )
    target: TargetConfig = TargetConfig()


class RuntimeConfig(_Section):
    mode: Literal["ray", "local"] = Field(
        "ray",
        description="ray: every actor a Ray process (a laptop's local Ray, or a cluster); "
        "local: all of them in this one process, without Ray (for pdb, profiling, tiny "
        "machines; no fault tolerance, so no injected process faults).",
    )
    num_workers: int = Field(2, ge=1, description="EnvWorker actors.")
    worker_cpus: float = Field(0.5, gt=0, description="Ray CPUs each EnvWorker declares.")
    worker_gpus: float = Field(
        0.0,
        ge=0,
        description="Ray GPUs each EnvWorker declares (a fraction shares one GPU): set it when "
        "workers render with EGL on GPU nodes, so Ray places them there and counts their share.",
    )
    learner_cpus: float = Field(0.5, gt=0)
    vlm_cpus: float = Field(0.25, gt=0)
    placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Placement-group strategy for one run's actors."
    )
    torch_threads: int = Field(1, ge=1, description="Intra-op torch threads per EnvWorker.")
    learner_threads: int = Field(
        2, ge=1, description="Intra-op torch threads of the Learner (the busiest actor)."
    )
    max_restarts: int = Field(
        5,
        ge=0,
        description="Times Ray restarts a dead Learner or VLMService (each restores its state "
        "from the run directory) before the run stops.",
    )
    episode_attempts: int = Field(
        3,
        ge=1,
        description="Attempts an episode gets when its worker dies or raises (each failure "
        "replaces the worker); then the run stops naming the episode and the last error.",
    )


class EvalConfig(_Section):
    every: int = Field(50, ge=1, description="Training episodes between evaluation points.")
    episodes: int = Field(
        64,
        ge=1,
        description="Greedy episodes per evaluation point (SARL: 64); episode j starts from "
        "the benchmark's j-th fixed init state.",
    )
    at_start: bool = Field(
        True,
        description="Evaluate the initial policy too (SARL's curves start at 0 episodes); off "
        "saves a point whose value is known (no learning yet) on long sweeps.",
    )
    videos: int = Field(
        0,
        ge=0,
        description="Evaluation episodes per point saved as MP4 (agentview, the active prompt "
        "drawn on it) under the run's videos/.",
    )


class TrainConfig(_Section):
    episodes: int = Field(200, ge=0, description="Online training episodes.")
    checkpoint_every: int = Field(
        50, ge=1, description="Training episodes between checkpoints (also at each eval)."
    )
    demos: str | None = Field(
        None,
        description="Demonstrations loaded into the replay buffer before online learning: a "
        ".npz file or a directory of them (format: docs/robot.md; SARL's robot runs: 3 per task).",
    )


class FaultsConfig(_Section):
    """Deliberate faults, so the recovery paths run in CI with real processes. All off (0)."""

    kill_worker_every: int = Field(
        0,
        ge=0,
        description="Each EnvWorker process exits abruptly (os._exit) midway through every "
        "N-th episode it runs, as a segfaulting simulator would.",
    )
    raise_in_worker_every: int = Field(
        0,
        ge=0,
        description="Each EnvWorker raises midway through every N-th episode it runs, as a "
        "diverged simulator (EnvError) would.",
    )
    kill_learner_at: int = Field(
        0,
        ge=0,
        description="The Learner process exits abruptly once, right after durably committing "
        "its N-th episode.",
    )
    kill_vlm_at_prompt: int = Field(
        0,
        ge=0,
        description="The VLMService process exits abruptly once, right after its prompt cache "
        "grows to N prompts and is saved.",
    )
    vlm_failure_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Probability that a VLM backend call fails (answered from the prompt cache).",
    )
    drop_vla_every: int = Field(
        0,
        ge=0,
        description="The run's own policy server drops the connection, unanswered, on every "
        "N-th request it receives.",
    )


class Config(_Section):
    method: str = Field(
        "sarl",
        description="sarl learns; the baselines do not: random (uniform over the candidates), "
        "zero_shot (the task sentence), vlm_only (the VLM picks from history), oracle (the "
        "task's atomic prompt sequence). The registry: sarl_dist/methods.py.",
    )
    vlm_only_decision_steps: int | None = Field(
        None,
        ge=1,
        description="Low-level steps per decision of the vlm_only baseline; its episodes keep "
        "their length in low-level steps. None: 40 on LIBERO (SARL's), else env.decision_steps.",
    )
    seed: int = Field(0, ge=0)
    env: EnvConfig = EnvConfig()
    vla: VLAConfig = VLAConfig()
    vlm: VLMConfig = VLMConfig()
    cache: PromptCacheConfig = PromptCacheConfig()
    q: QConfig = QConfig()
    learner: LearnerConfig = LearnerConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    eval: EvalConfig = EvalConfig()
    train: TrainConfig = TrainConfig()
    faults: FaultsConfig = FaultsConfig()

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        return method

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        kills = self.faults.kill_worker_every or self.faults.kill_learner_at
        if self.runtime.mode == "local" and (kills or self.faults.kill_vlm_at_prompt):
            raise ValueError("faults: killing a process needs runtime.mode=ray (it is the run)")
        if self.env.kind == "robot" and self.runtime.num_workers != 1:
            raise ValueError("runtime.num_workers: a robot run has one robot, so one worker")
        if self.train.episodes == 0 and not self.eval.at_start:
            raise ValueError(
                "eval.at_start=false with train.episodes=0: the run would neither train nor "
                "evaluate (a baseline that does not learn is measured by its evaluation at 0)"
            )
        reserved = 1 + int(self.cache.seed_task_prompt) + len(self.cache.seed_prompts)
        if reserved > self.cache.capacity:
            raise ValueError(
                f"cache.capacity={self.cache.capacity} cannot hold reset-to-home and "
                f"{reserved - 1} seed prompts"
            )
        return METHODS[self.method].check(self)

    @property
    def gamma(self) -> float:
        if self.learner.gamma is not None:
            return self.learner.gamma
        return 1.0 - 1.0 / max(2, self.env.max_decisions)

    @property
    def learns(self) -> bool:
        return METHODS[self.method].learns


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].removeprefix("Value error, ")
        got = repr(e["input"])
        got = got if len(got) <= 120 else f"{got[:100]}... ({len(got)} characters)"
        lines.append(f"{loc or 'config'}: {msg}" + (f" (got {got})" if loc else ""))
    return "invalid config:\n  " + "\n  ".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value) with value read as YAML (so 1e-3, true, [1, 2] work)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML: {exc}") from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = _deep_copy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {'.'.join(path)}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return out


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


# Fields that moved, old place -> new place: a run directory written before the move still
# loads (`sarl report`, `--resume`), and a config naming the old place is told the new one.
MOVED_FIELDS = {("learner", "bootstrap_on_timeout"): ("env", "bootstrap_truncated")}


def _move_fields(data: dict[str, Any]) -> dict[str, Any]:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for (section, name), (new_section, new_name) in MOVED_FIELDS.items():
        old = data.get(section)
        if not isinstance(old, dict) or name not in old:
            continue
        target = data.setdefault(new_section, {})
        if not isinstance(target, dict) or new_name in target:
            continue  # validation reports the old field as unknown
        log.warning("%s.%s is now %s.%s", section, name, new_section, new_name)
        target[new_name] = old.pop(name)
    return data


def build_config(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(_move_fields(data))
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    return data


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    data = read_yaml(path) if path is not None else {}
    return build_config(apply_overrides(data, list(overrides)))


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def dict_changes(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The dotted keys where nested dicts `a` and `b` differ, each with both values."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += dict_changes(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key} ({va!r} -> {vb!r})")
    return out
