"""Functions run in spawned processes (they must be importable by name)."""

import os


def check_configs(rank: int, world_size: int, port: int, results) -> None:
    import torch.distributed as dist

    from kiln.core.dist import check_same_config
    from kiln.core.errors import KilnError

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        check_same_config({"optim": {"lr": 0.1 if rank == 0 else 0.2}})
        results.put((rank, "no error"))
    except KilnError as e:
        results.put((rank, str(e)))
    finally:
        dist.destroy_process_group()
