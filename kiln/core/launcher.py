"""Who started this process: torchrun (its RANK / LOCAL_RANK / WORLD_SIZE), SLURM's `srun` (SLURM_PROCID,
SLURM_LOCALID, SLURM_NTASKS, SLURM_NODEID and the job's node list, translated into torchrun's variables), or
nobody (one process). torchrun's variables win when both are set, as under `srun torchrun ...`.

`srun kiln train CONFIG` inside an allocation then just works: every task is a rank, the rendezvous is the
first host of the step's node list, on a port derived from the job id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from kiln.core.errors import KilnError


@dataclass(frozen=True)
class Launch:
    launcher: str  # "torchrun" | "slurm" | "none"
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    node: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    tasks_on_node: int = 1
    gpus_on_node: int | None = None  # what SLURM allocated on this node (None: not said)

    def describe(self) -> str:
        if self.launcher == "none":
            return "none (one process; torchrun, kiln train --nproc N or srun start several)"
        where = f", rendezvous {self.master_addr}:{self.master_port}" if self.master_addr else ""
        return (f"{self.launcher}: rank {self.rank} of {self.world_size} (local rank {self.local_rank}, node "
                f"{self.node}){where}")


def detect(environ: Mapping[str, str] | None = None) -> Launch:
    env = os.environ if environ is None else environ
    if "RANK" in env or "WORLD_SIZE" in env:
        world = int(env.get("WORLD_SIZE", 1))
        return Launch("torchrun", int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), world,
                      int(env.get("GROUP_RANK", env.get("NODE_RANK", 0))), env.get("MASTER_ADDR"),
                      int(env["MASTER_PORT"]) if env.get("MASTER_PORT", "").isdigit() else None,
                      int(env.get("LOCAL_WORLD_SIZE", world)))
    if "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:  # a task of an srun step (not the batch script itself)
        world = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
        nodes = parse_nodelist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost")
        port = int(env["MASTER_PORT"]) if "MASTER_PORT" in env else \
            15000 + int(re.sub(r"\D", "", env.get("SLURM_JOB_ID", "0")) or 0) % 20000
        node = int(env.get("SLURM_NODEID", 0))
        gpus = env.get("SLURM_GPUS_ON_NODE")
        return Launch("slurm", int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), world, node,
                      env.get("MASTER_ADDR") or nodes[0], port, _tasks_on_node(env, node, world),
                      int(gpus) if gpus and gpus.isdigit() else None)
    return Launch("none")


def export(launch: Launch, environ: dict[str, str] | None = None) -> None:
    """torchrun's variables for a SLURM task, so the env:// rendezvous (and any library reading them) sees the
    same ranks."""
    env = os.environ if environ is None else environ
    if launch.launcher != "slurm":
        return
    env.update({"RANK": str(launch.rank), "LOCAL_RANK": str(launch.local_rank),
                "WORLD_SIZE": str(launch.world_size), "LOCAL_WORLD_SIZE": str(launch.tasks_on_node),
                "MASTER_ADDR": str(launch.master_addr), "MASTER_PORT": str(launch.master_port)})


def check_layout(launch: Launch, backend: str) -> None:
    """Under nccl every task of a node needs a GPU of its own: a step with more (or fewer) tasks per node than
    the GPUs SLURM gave the node is refused before any process group starts."""
    if launch.launcher != "slurm" or backend != "nccl" or launch.gpus_on_node is None:
        return
    if launch.tasks_on_node != launch.gpus_on_node:
        raise KilnError(f"srun started {launch.tasks_on_node} tasks on node {launch.node} but SLURM gave it "
                        f"{launch.gpus_on_node} GPU(s); under nccl each task needs one GPU: ask for "
                        f"--ntasks-per-node={launch.gpus_on_node} (or --gpus-per-node={launch.tasks_on_node})")


def parse_nodelist(text: str) -> list[str]:
    """SLURM's compressed host lists without scontrol: 'gpu[01-04,07],cpu5' -> gpu01 .. gpu04, gpu07, cpu5."""
    hosts: list[str] = []
    for item in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", text.replace(" ", "")):
        hosts += _expand(item)
    if not hosts:
        raise KilnError(f"cannot read SLURM's node list {text!r}; set MASTER_ADDR to the first node's address")
    return hosts


def _expand(item: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", item)
    if match is None:
        return [item] if item else []
    head, tail = item[:match.start()], item[match.end():]
    tails = _expand(tail) if tail else [""]
    out = []
    for part in match.group(1).split(","):
        first, sep, last = part.partition("-")
        if not sep:
            out += [f"{head}{first}{t}" for t in tails]
            continue
        if not (first.isdigit() and last.isdigit()) or int(last) < int(first):
            raise KilnError(f"cannot read the range {part!r} in SLURM's node list {item!r}")
        width = len(first)
        for n in range(int(first), int(last) + 1):
            out += [f"{head}{n:0{width}d}{t}" for t in tails]
    return out


def _tasks_on_node(env: Mapping[str, str], node: int, world: int) -> int:
    """Tasks of this step on node `node`, from SLURM_STEP_TASKS_PER_NODE ('4(x2),3' = 4, 4, 3)."""
    text = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if not text:
        return world
    counts: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            return world
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts[node] if node < len(counts) else counts[-1]
