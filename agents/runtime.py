"""``Runtime``: starts (or joins) a Ray cluster with engine replicas, tool executors and
program actors, and runs agent programs on it."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

import ray

from tether.agents.context import Context
from tether.engine import EngineConfig
from tether.engine.policies import DEFAULT_POLICY, POLICY_PRESETS
from tether.runtime.local_cluster import init_local_ray
from tether.runtime.program import AgentProgram, ProgramResult
from tether.runtime.replica import EngineReplica
from tether.runtime.replica_client import ReplicaClient, replica_stats
from tether.runtime.router import Router
from tether.runtime.tool_executor import ToolExecutorPool


class ProgramFailed(RuntimeError):
    """The program raised, was cancelled, or lost its engine replica; ``result`` has details."""

    def __init__(self, result: ProgramResult):
        super().__init__(f"program {result.program_id} failed: {result.error}")
        self.result = result


@dataclass
class ProgramOutput:
    """What a program returns: the agent's value, per-agent stats and the transcript."""

    value: Any
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    transcript: list[tuple[str, str, str]] = field(default_factory=list)


def _entry(agent: Any, inputs: dict[str, Any]):
    name = getattr(agent, "name", None) or getattr(agent, "__name__", "main")

    async def entry(services) -> ProgramOutput:
        ctx = Context(services, name)
        value = await agent(ctx, **inputs)
        return ProgramOutput(value, ctx.stats_dict(), ctx.transcript)
    return entry


class ProgramHandle:
    """A submitted program. ``await handle`` or ``handle.result()`` gives its value."""

    def __init__(self, program_id: str, ref: ray.ObjectRef, actor: Any):
        self.program_id = program_id
        self._ref = ref
        self._actor = actor

    def outcome(self, timeout: float | None = None) -> ProgramResult:
        """The full result (ok, value as ``ProgramOutput``, error), never raising for a failed program."""
        return ray.get(self._ref, timeout=timeout)

    async def outcome_async(self) -> ProgramResult:
        """``outcome`` for async callers."""
        return await self._ref

    def result(self, timeout: float | None = None) -> Any:
        return _unwrap(self.outcome(timeout))

    def __await__(self):
        async def wait():
            return _unwrap(await self._ref)
        return wait().__await__()

    def cancel(self) -> None:
        """Cancel the program: its engine requests are aborted and their blocks freed."""
        self._actor.cancel.remote(self.program_id)


def _check_resources(what: str, resources: dict[str, float] | None) -> dict[str, float] | None:
    if resources is None:
        return None
    if not isinstance(resources, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and v > 0
                                                  for k, v in resources.items()):
        raise ValueError(f"{what} must map Ray resource names to positive amounts, e.g. "
                         f'{{"tether_gpu": 1}}; got {resources!r}')
    if {"CPU", "GPU", "memory"} & set(resources):
        raise ValueError(f"{what} is for custom resources; CPU/GPU/memory are set by the runtime, got {resources!r}")
    return dict(resources)


def _replicas_for(cluster: dict[str, float], per_replica: dict[str, float] | None) -> int:
    """How many replicas the cluster's ``per_replica`` resources fit (0 when none are asked for)."""
    if not per_replica:
        return 0
    n = min(int(cluster.get(k, 0) // v) for k, v in per_replica.items())
    if n < 1:
        raise ValueError(f"no node of the cluster offers replica_resources={per_replica} "
                         f"(cluster resources: {sorted(k for k in cluster if not k.startswith('node:'))})")
    return n


def _unwrap(res: ProgramResult) -> Any:
    if not res.ok:
        raise ProgramFailed(res)
    return res.value.value


class Runtime:
    """Agent programs on Ray: local by default, or on an existing cluster.

    Example::

        with Runtime(model="default") as rt:
            print(rt.run(my_agent, input="hello"))
            handles = [rt.submit(my_agent, input=q) for q in questions]
            answers = [h.result() for h in handles]

    ``address=None`` starts an embedded Ray cluster on this machine; an address
    joins that cluster, with one engine replica per GPU there (``replicas``
    overrides). ``policy`` names the scheduling preset every replica runs
    (``POLICY_PRESETS`` in ``tether.engine.policies``, e.g. ``baseline``;
    default ``tether``, ``EngineConfig``'s); it wins over a ``policy`` key in
    ``engine``, which holds further ``EngineConfig`` fields for every replica
    (they override the preset's).

        Runtime(policy="baseline", engine={"num_kv_blocks": 1024})

    The embedded cluster listens on 127.0.0.1 only; ``ray_host`` (or ``$TETHER_RAY_HOST``) binds
    another address, e.g. ``"0.0.0.0"`` for Ray's default (all interfaces). See
    ``tether.runtime.local_cluster``.

    Placement on a multi-node cluster: ``replica_resources`` are custom Ray resources each engine
    replica needs (e.g. ``{"tether_gpu": 1}``, advertised by the GPU nodes with ``ray start
    --resources='{"tether_gpu": 1}'``), so replicas land only there; without ``replicas`` there is one
    replica per such resource unit in the cluster. ``worker_resources`` do the same for the program
    actors, tool executors and the router (e.g. CPU-only nodes). ``placement()`` says where each went.

        Runtime(address="auto", replica_resources={"tether_gpu": 1}, worker_resources={"tether_cpu": 1})

    A replica that dies is restarted by Ray, at most ``replica_max_restarts`` times each; its
    in-flight requests fail (``ReplicaDied``), new programs go to the other replicas until it
    answers again, and ``stats()["replica_restarts"]`` counts the restarts.
    """

    def __init__(self, address: str | None = None, model: str = "default", replicas: int | None = None,
                 engine: dict[str, Any] | None = None, tool_actors: int = 2, program_actors: int = 1,
                 tool_timeout_s: float = 60.0, num_cpus: int | None = None, policy: str | None = None,
                 ray_host: str | None = None, replica_max_restarts: int = 3,
                 replica_resources: dict[str, float] | None = None,
                 worker_resources: dict[str, float] | None = None):
        if replica_max_restarts < 0:
            raise ValueError(f"replica_max_restarts must be >= 0, got {replica_max_restarts}")
        self.replica_resources = _check_resources("replica_resources", replica_resources)
        self.worker_resources = _check_resources("worker_resources", worker_resources)
        self.address = address
        self.ray_host = ray_host
        self.replica_max_restarts = replica_max_restarts
        self.model = model
        self.replicas_wanted = replicas
        self.engine_overrides = dict(engine or {})
        if policy is not None:
            self.engine_overrides["policy"] = policy
        # an unknown name fails here, not inside a replica
        self.policy: str = POLICY_PRESETS.check(self.engine_overrides.get("policy", DEFAULT_POLICY))
        self.max_model_len: int | None = None  # the replicas' context, read when they are ready
        self.tool_actors = tool_actors
        self.program_actors_n = program_actors
        self.tool_timeout_s = tool_timeout_s
        self.num_cpus = num_cpus
        self._started_ray = False
        self.replicas: list = []
        self.router = None
        self.tools: ToolExecutorPool | None = None
        self.programs: list = []
        self._rr = itertools.count()
        self._tokenizer = None

    # ---- lifecycle ---------------------------------------------------------------
    def start(self) -> "Runtime":
        try:
            return self._start()
        except BaseException:  # e.g. the model fails to load: stop what started (``__exit__`` never runs)
            self.shutdown()
            raise

    def _start(self) -> "Runtime":
        if not ray.is_initialized():
            quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if self.address is None:
                init_local_ray(self.num_cpus, self.ray_host, **quiet)
            else:
                ray.init(address=self.address, **quiet)
            self._started_ray = True
        cluster = ray.cluster_resources()
        gpus = int(cluster.get("GPU", 0))
        fit = _replicas_for(cluster, self.replica_resources)
        if self.replicas_wanted and fit and self.replicas_wanted > fit:  # the rest would wait forever for a node
            raise ValueError(f"replicas={self.replicas_wanted} but the cluster has room for {fit} with "
                             f"replica_resources={self.replica_resources}; add nodes or ask for fewer")
        n = self.replicas_wanted or fit or (gpus if gpus else 1)
        # Ray restarts a dead replica (a fresh engine); calls in flight on it fail rather than retry.
        opts: dict[str, Any] = {"num_cpus": 0, "max_restarts": self.replica_max_restarts, "max_task_retries": 0}
        if gpus:
            opts["num_gpus"] = 1
        if self.replica_resources:
            opts["resources"] = dict(self.replica_resources)
        worker = {"num_cpus": 0, **({"resources": dict(self.worker_resources)} if self.worker_resources else {})}
        cfg = self.engine_config(gpus)
        self.replicas = [EngineReplica.options(**opts).remote(cfg) for _ in range(n)]
        self.router = Router.options(**worker).remote(n)
        self.tools = ToolExecutorPool(self.tool_actors, default_timeout_s=self.tool_timeout_s,
                                      actor_options=worker)
        self.programs = [AgentProgram.options(**worker).remote(self.replicas, self.router, self.tools, None,
                                                               self.model)
                         for _ in range(self.program_actors_n)]
        ready = ray.get([r.ready.remote() for r in self.replicas])  # surface a load error now, clearly
        self.policy = ready[0]["policy"]
        self.max_model_len = min(r["max_model_len"] for r in ready)  # bounds prompts before tokenizing
        ray.get(self.router.watch.remote(self.replicas, [r["incarnation"] for r in ready]))
        return self

    def engine_config(self, gpus: int = 0) -> EngineConfig:
        """Every replica's config: the model, the device, the policy preset and the ``engine`` fields."""
        return EngineConfig(model=self.model, device="cuda" if gpus else "cpu", **self.engine_overrides)

    def shutdown(self) -> None:
        for a in [*self.programs, *self.replicas, self.router, *(self.tools.actors if self.tools else [])]:
            try:
                ray.kill(a)
            except Exception:
                pass
        self.programs, self.replicas, self.router, self.tools = [], [], None, None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> "Runtime":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # ---- programs ----------------------------------------------------------------
    def submit(self, agent: Any, *, program_id: str | None = None, **inputs: Any) -> ProgramHandle:
        """Start ``agent`` (an ``Agent`` or ``async def agent(ctx, **inputs)``) as a program."""
        if not self.replicas:
            raise RuntimeError("the runtime is not started: use `with Runtime() as rt:` or rt.start()")
        name = getattr(agent, "name", None) or getattr(agent, "__name__", "program")
        pid = program_id or f"{name}-{uuid.uuid4().hex[:8]}"
        actor = self.programs[next(self._rr) % len(self.programs)]
        return ProgramHandle(pid, actor.run.remote(pid, _entry(agent, inputs)), actor)

    def run(self, agent: Any, **inputs: Any) -> Any:
        """Run one program to the end and return its value (raises ``ProgramFailed``)."""
        return self.submit(agent, **inputs).result()

    def client(self) -> ReplicaClient:
        """An ``LLMClient`` over this runtime's replicas (for the HTTP server, or direct calls)."""
        client = ReplicaClient(self.replicas, self.router, self.tokenizer, self.model, self.policy)
        client.max_model_len = self.max_model_len
        return client

    def placement(self) -> dict[str, list[str]]:
        """The Ray node id each actor runs on: ``replicas`` (in router order), ``programs``, ``tools``.

            rt.placement()   # {"replicas": ["a3f...", "9c1..."], "programs": ["77e..."], "tools": [...]}
        """
        def node(actor: Any) -> str:  # the GCS's actor table: works without Ray's dashboard
            return ray._private.state.state.actor_table(actor._actor_id.hex())["Address"]["NodeID"]
        return {"replicas": [node(a) for a in self.replicas], "programs": [node(a) for a in self.programs],
                "tools": [node(a) for a in (self.tools.actors if self.tools else [])]}

    def stats(self) -> dict[str, Any]:
        """Engine stats summed over the live replicas (per replica under ``replicas``, a dead one as
        ``{"dead": True}``), plus ``replica_restarts`` and ``replicas_dead``."""
        ray.get([p.ping.remote() for p in self.programs])  # programs that ended have released their KV
        return replica_stats(self.replicas, self.router)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from tether.engine.model_loader import load_tokenizer
            self._tokenizer = load_tokenizer(self.model)
        return self._tokenizer
