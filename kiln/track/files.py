"""metrics.jsonl (one JSON object per epoch) and metrics.csv beside it."""

from __future__ import annotations

import csv
import json
from typing import Any

from kiln.runs import RunDir


class MetricsFiles:
    def __init__(self, run: RunDir, resume_epoch: int | None = None):
        self.jsonl, self.csv = run.metrics_jsonl, run.metrics_csv
        self.rows: list[dict[str, Any]] = []
        if resume_epoch is not None and self.jsonl.exists():
            # Epochs logged after the checkpoint we resume from will be trained again: drop them.
            rows = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]
            self.rows = [r for r in rows if r.get("epoch", 0) <= resume_epoch]
            self._rewrite_jsonl()
            self._write_csv()

    def _rewrite_jsonl(self) -> None:
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.rows))

    def _write_csv(self) -> None:
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        with open(self.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def log_config(self, config: dict[str, Any]) -> None:
        pass  # config.yaml is written by the run folder

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        row = {"epoch": epoch, **metrics}
        self.rows.append(row)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        self._write_csv()  # columns may grow, so the small file is rewritten

    def log_test(self, metrics: dict[str, Any]) -> None:
        pass  # test_metrics.json is written by the evaluation

    def close(self) -> None:
        pass


def read_metrics(run: RunDir) -> list[dict[str, Any]]:
    """The rows this tracker wrote (the run folder owns the file's layout)."""
    return run.metrics()
