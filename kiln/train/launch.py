"""`kiln train --nproc N`: start N local training processes through torchrun's elastic agent.

The agent watches the workers: if one fails, the group is stopped and the failing rank's error shown; with
`--max-restarts R` the group is started again and resumes from the run folder's last.pt.
"""

from __future__ import annotations

import sys

from kiln.core.errors import KilnError


def launch(nproc: int, max_restarts: int, worker_args: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if nproc < 1:
        raise KilnError(f"--nproc must be at least 1, not {nproc}")
    args = get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(nproc),
                                         "--max-restarts", str(max_restarts), "-m", "kiln", "train",
                                         *worker_args])
    try:
        run(args)
    except ChildFailedError as e:
        failures = "; ".join(f"rank {rank} exited with code {f.exitcode}" for rank, f in sorted(e.failures.items()))
        print(f"kiln: distributed training failed: {failures} (see that rank's error above)", file=sys.stderr)
        codes = {f.exitcode for f in e.failures.values()}
        return 2 if codes == {2} else (130 if codes == {130} else 1)
    return 0
