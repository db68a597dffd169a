"""kiln doctor: versions, GPUs (through NVML), memory, datasets and optional extras."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check this machine: versions, GPUs, memory, datasets, extras",
                       description="Print Python/torch/CUDA/cuDNN versions; every GPU's name, memory, utilisation "
                                   "and running processes (through NVIDIA's management library); CPU count and "
                                   "RAM; where each registered dataset was found (or where kiln looked); and which "
                                   "optional extras are installed. Exits 0 on machines without a GPU.")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from kiln.commands.doctor import report

    r = report()
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    h, t = r["host"], r["torch"]
    print(f"python {h['python']} on {h['platform']}")
    print(f"cpus {h['cpus']} ({h['usable_cores']} usable: data.num_workers up to {max(h['usable_cores'] - 1, 0)} "
          f"leaves one for training), RAM {h.get('ram_gib', '?')} GiB ({h.get('ram_free_gib', '?')} GiB free), "
          f"/dev/shm {h['shm_gib'] if h['shm_gib'] is not None else '?'} GiB, open files {h['open_files_limit'] or '?'}")
    for warning in h["warnings"]:
        print(f"warning: {warning}")
    print(f"torch {t['torch']}, torchvision {t['torchvision']}, CUDA {t['cuda'] or '-'}, cuDNN {t['cudnn'] or '-'}, "
          f"NCCL {t['nccl'] or '-'}, {t['threads']} CPU threads")
    if r["gpus"]:
        for g in r["gpus"]:
            procs = g["processes"] if isinstance(g["processes"], str) else (", ".join(
                f"pid {p['pid']} ({p['memory_mib']} MiB)" for p in g["processes"]) or "no processes")
            print(f"GPU {g['index']}: {g['name']}, {_n(g['memory_used_mib'])} / {_n(g['memory_total_mib'])} MiB "
                  f"used, {_n(g['utilization_pct'])}% busy, processes: {procs}")
    else:
        print(f"GPU: none — {r['gpu_note']}; training runs on the CPU" +
              (" (MPS is available)" if t["mps_available"] else ""))
    print(f"launcher: {r['launcher']}")
    for d in r["datasets"]:
        print(f"dataset {d['name']}: " + (f"found in {d['found']}" if d["found"] else
                                          f"not found (looked in {', '.join(d['looked_in'])})"))
    print("extras: " + ", ".join(f"{k} {v}" if v else f"{k} (not installed)" for k, v in r["extras"].items()))
    return 0


def _n(value) -> str:
    """A count with thousands separators, or "n/a" where NVML could not tell."""
    return f"{value:,}" if isinstance(value, int) else str(value)
