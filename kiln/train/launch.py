"""`kiln train --nproc N`: start N local training processes through torchrun's elastic agent.

The agent watches the workers: if one fails, the group is stopped and the failing rank's error shown; with
`--max-restarts R` the group is started again and resumes from the run folder's last.pt.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kiln.core.errors import KilnError
from kiln.core.hang import explain


def launch(nproc: int, max_restarts: int, worker_args: list[str], run_dir: Path | None = None) -> int:
    """Run the workers; `run_dir`: the run folder they share (where a stalled rank leaves its hang report)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if nproc < 1:
        raise KilnError(f"--nproc must be at least 1, not {nproc}")
    if run_dir is not None:  # NCCL's flight recorder: its last collectives per rank, dumped when one times out
        os.environ.setdefault("TORCH_NCCL_TRACE_BUFFER_SIZE", "2000")
        os.environ.setdefault("TORCH_NCCL_DUMP_ON_TIMEOUT", "1")
        os.environ.setdefault("TORCH_NCCL_DEBUG_INFO_TEMP_FILE", str(run_dir / "nccl-trace-rank"))
    args = get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(nproc),
                                         "--max-restarts", str(max_restarts), "-m", "kiln", "train",
                                         *worker_args])
    try:
        run(args)
    except ChildFailedError as e:
        if run_dir is not None and (hung := explain(run_dir)) is not None:
            print(f"kiln: distributed training hung: {hung}. {_kept(run_dir)}", file=sys.stderr)
            return 1
        failures = "; ".join(f"rank {rank} exited with code {f.exitcode}" for rank, f in sorted(e.failures.items()))
        print(f"kiln: distributed training failed: {failures} (see that rank's error above)", file=sys.stderr)
        codes = {f.exitcode for f in e.failures.values()}
        return 2 if codes == {2} else (130 if codes == {130} else 1)
    return 0


def _kept(run_dir: Path) -> str:
    """What a stopped group leaves: last.pt of the last finished epoch, and how to go on."""
    from kiln.runs import RunDir

    run = RunDir(run_dir)
    if not run.has_last():
        return "No checkpoint was written yet"
    return f"{run.last} is intact (the last finished epoch); resume with: kiln train --resume {run_dir}"
