"""A run's actors and where they live: one Ray placement group (Ray mode), or this
process (`runtime.mode: local`; see runtime/compute.py).

Bundle order: the Learner, the VLMService, each worker, then each of the run's own
policy-server replicas. Workers reach the policy servers in `servers_for` order, so the
workers of a server that dies spread over the rest.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import ray
import torch
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from sarl_dist.config import Config
from sarl_dist.runtime import compute
from sarl_dist.runtime.learner import Learner, LearnerSetup
from sarl_dist.runtime.vla_server import VLAServer
from sarl_dist.runtime.vlm_service import VLMService
from sarl_dist.runtime.worker import EnvWorker
from sarl_dist.vla import configured_servers, servers_for

PLACEMENT_TIMEOUT_S = 120.0


class PlacementError(RuntimeError):
    """The cluster cannot place the run's actors."""


def learner_gpus(cfg: Config) -> float:
    """The GPU the Learner asks for: one when it trains on cuda (learner.device=cuda, or
    auto where torch here sees a GPU). Without one Ray hides the GPUs from the actor, so
    its own `auto` then picks the CPU too."""
    device = cfg.learner.device
    return 1.0 if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else 0.0


def placement_bundles(cfg: Config) -> list[dict[str, float]]:
    """A run's placement group, in bundle order."""
    rt, vla = cfg.runtime, cfg.vla
    gpus = learner_gpus(cfg)
    learner = {"CPU": rt.learner_cpus} | ({"GPU": gpus} if gpus else {})
    worker = {"CPU": rt.worker_cpus} | ({"GPU": rt.worker_gpus} if rt.worker_gpus else {})
    server = {"CPU": vla.server_cpus} | ({"GPU": vla.server_gpus} if vla.server_gpus else {})
    replicas = vla.replicas if vla.kind == "skill" else 0
    return (
        [learner, {"CPU": rt.vlm_cpus}]
        + [worker] * rt.num_workers
        + [server | vla.server_resources] * replicas
    )


def cpus_needed(cfg: Config) -> float:
    """The CPUs a run's placement group asks for."""
    return sum(b["CPU"] for b in placement_bundles(cfg))


class RunActors:
    """Builds the run's Learner, VLMService, policy servers and workers, and replaces a
    worker that failed."""

    def __init__(self, cfg: Config, run_name: str, placement: PlacementGroup | None = None) -> None:
        """`placement`: a placement group made for this run elsewhere (a Ray Tune trial's);
        it must hold this run's bundles, and it stays when the run ends."""
        self.cfg, self.run_name = cfg, run_name
        self.local = cfg.runtime.mode == "local"
        self._given = placement
        self._pg = None
        self.nodes: list[str] = []
        self.services: list = []
        self.workers: list = []
        self.vla_servers: list = []  # the run's own policy servers (vla.kind=skill)
        self.vla_addresses: list[tuple[str, int]] = []

    def _spawn(
        self,
        cls: type,
        bundle: int,
        cpus: float,
        gpus: float = 0.0,
        resources: dict | None = None,
        **options,
    ):
        """`cls` as an actor in the given bundle (or in process); call the result with the
        constructor's arguments."""
        if self.local:
            return lambda *args: compute.LocalActor(cls(*args))
        strategy = PlacementGroupSchedulingStrategy(
            placement_group=self._pg, placement_group_bundle_index=bundle
        )
        return (
            ray.remote(cls)
            .options(
                num_cpus=cpus,
                num_gpus=gpus,
                resources=resources or {},
                scheduling_strategy=strategy,
                **options,
            )
            .remote
        )

    def _place(self) -> None:
        rt, bundles = self.cfg.runtime, placement_bundles(self.cfg)
        if self._given is not None:
            given = [{k: v for k, v in b.items() if v} for b in self._given.bundle_specs]
            if given != [{k: v for k, v in b.items() if v} for b in bundles]:
                raise PlacementError(
                    f"the placement group given holds {given}, this run needs {bundles}"
                )
            self._pg = self._given
        else:
            self._pg = placement_group(bundles, strategy=rt.placement, name=f"sarl-{self.run_name}")
        ready, _ = ray.wait([self._pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            need: Counter[str] = Counter()
            for bundle in bundles:
                need.update(bundle)
            free = ray.available_resources()
            raise PlacementError(
                f"the cluster could not place this run's actors within {PLACEMENT_TIMEOUT_S:.0f}s "
                f"(needs {', '.join(f'{v:g} {k}' for k, v in need.items())} in {len(bundles)} "
                f"bundles, strategy {rt.placement}); available: "
                + ", ".join(f"{free.get(k, 0):g} {k}" for k in need)
            )
        placed = placement_group_table(self._pg)["bundles_to_node_id"].values()
        self.nodes = sorted(set(placed))  # where this run's actors live, for the summary

    def start(
        self,
        checkpoints: Path,
        episode_log: Path,
        cache_state: dict | None,
        responses: list[dict],
        cache_file: Path,
        task: str,
    ) -> None:
        """The services first (the workers need their handles), then the workers."""
        cfg, rt, vla = self.cfg, self.cfg.runtime, self.cfg.vla
        if not self.local:
            self._place()
        durable = (
            {}
            if self.local
            else {"max_restarts": rt.max_restarts, "max_task_retries": rt.max_restarts}
        )
        self.learner = self._spawn(
            Learner, 0, rt.learner_cpus, learner_gpus(cfg), max_concurrency=8, **durable
        )(
            LearnerSetup.of(cfg),
            cfg.cache.capacity,
            str(checkpoints),
            str(episode_log),
            self.run_name,
        )
        self.vlm = self._spawn(VLMService, 1, rt.vlm_cpus, **durable)(
            cfg, task, cache_state, responses, str(cache_file), self.run_name
        )
        first = 2 + rt.num_workers
        replicas = vla.replicas if vla.kind == "skill" else 0
        servers = [
            self._spawn(
                VLAServer, first + i, vla.server_cpus, vla.server_gpus, dict(vla.server_resources)
            )(cfg)
            for i in range(replicas)
        ]
        self.vla_servers = servers
        self.services = [self.learner, self.vlm, *servers]
        if vla.kind == "websocket":
            self.vla_addresses = configured_servers(cfg)
        else:
            self.vla_addresses = compute.get([s.address.remote() for s in servers])
        self.workers = [self.new_worker(i) for i in range(rt.num_workers)]
        compute.get([w.ready.remote() for w in self.workers])

    def new_worker(self, slot: int):
        rt = self.cfg.runtime
        texts = compute.get(self.vlm.prompt_texts.remote())
        # The robot's worker answers `live` while its episode runs (a second thread).
        threads = {"max_concurrency": 2} if self.cfg.env.kind == "robot" else {}
        return self._spawn(EnvWorker, 2 + slot, rt.worker_cpus, rt.worker_gpus, **threads)(
            self.cfg,
            slot,
            self.learner,
            self.vlm,
            texts,
            servers_for(slot, self.vla_addresses),
        )

    def replace_worker(self, slot: int) -> None:
        compute.kill(self.workers[slot])
        self.workers[slot] = self.new_worker(slot)

    def stop_workers(self) -> None:
        for worker in self.workers:
            compute.kill(worker)
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        for actor in self.services:
            compute.kill(actor)
        if self._pg is not None and self._pg is not self._given:
            remove_placement_group(self._pg)
        self.services, self._pg = [], None
