"""The durable state of a batch: one SQLite file under OUT (`OUT/batch.sqlite`), written only by the driver.

Per object: its image and plan (the resolved options). Per object and stage: status (pending, running, done,
failed), attempts, the error line, when it was submitted, started, finished and recorded, its duration, the paths of
its outputs, the checkpoint step it resumed from and the host that ran it. Per invocation of `sin-batch`: its
command line, wall time and the time Ray took to start and stop. Every transition is one transaction (WAL journal,
full sync), so a driver killed at any moment leaves the last committed state: a stage is `done` only once its
outputs are on disk and that row is committed, and a `running` row found by the next run is resumed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from single_image_nerf.batch.stages import STAGES, ObjectPlan
from single_image_nerf.errors import UserInputError

STATUSES = ("pending", "running", "done", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    name TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    plan TEXT NOT NULL,
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stages (
    name TEXT NOT NULL REFERENCES objects(name),
    stage TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    submitted_at REAL,
    started_at REAL,
    finished_at REAL,
    recorded_at REAL,
    seconds REAL,
    outputs TEXT,
    resumed_from INTEGER,
    host TEXT,
    PRIMARY KEY (name, stage)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    argv TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    ray_start_s REAL,
    ray_stop_s REAL,
    max_concurrent INTEGER,
    stages_run INTEGER
);
"""


class Store:
    """The state store of one output folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        with self.transaction():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)

    def close(self) -> None:
        self.conn.close()

    def transaction(self):
        """A context manager: one BEGIN IMMEDIATE ... COMMIT (rolled back on an exception)."""
        return _Transaction(self.conn)

    # ------------------------------------------------------------------------------------------------ objects

    def register(self, plans: Sequence[ObjectPlan]) -> None:
        """Add the objects not yet stored (each with every stage pending); refuse an object whose plan differs
        from the one it was first run with."""
        with self.transaction():
            for plan in plans:
                row = self.conn.execute("SELECT plan FROM objects WHERE name = ?", (plan.name,)).fetchone()
                if row is not None:
                    if row["plan"] != plan.to_json():
                        changed = _changed_keys(row["plan"], plan.to_json())
                        raise UserInputError(
                            f"object {plan.name!r} was started with other options ({', '.join(changed)}) in "
                            f"{self.path.parent}; rerun with the same options, or use another --output")
                    continue
                self.conn.execute("INSERT INTO objects (name, image, plan, added_at) VALUES (?, ?, ?, ?)",
                                  (plan.name, plan.image, plan.to_json(), time.time()))
                self.conn.executemany("INSERT INTO stages (name, stage, position) VALUES (?, ?, ?)",
                                      [(plan.name, stage, i) for i, stage in enumerate(STAGES)])

    def plan(self, name: str) -> ObjectPlan:
        return ObjectPlan.from_json(self.conn.execute("SELECT plan FROM objects WHERE name = ?", (name,)).fetchone()[0])

    # ---------------------------------------------------------------------------------------------- transitions

    def mark_running(self, name: str, stage: str) -> None:
        with self.transaction():
            self.conn.execute("UPDATE stages SET status = 'running', attempts = attempts + 1, error = NULL, "
                              "submitted_at = ?, started_at = NULL, finished_at = NULL, seconds = NULL "
                              "WHERE name = ? AND stage = ?", (time.time(), name, stage))

    def mark_finished(self, name: str, stage: str, result: Dict[str, object]) -> None:
        """Record a stage's result: done when `result["ok"]`, else failed with its error line."""
        status = "done" if result.get("ok") else "failed"
        with self.transaction():
            self.conn.execute(
                "UPDATE stages SET status = ?, error = ?, started_at = ?, finished_at = ?, recorded_at = ?, "
                "seconds = ?, outputs = ?, resumed_from = ?, host = ? WHERE name = ? AND stage = ?",
                (status, result.get("error"), result.get("started_at"), result.get("finished_at"), time.time(),
                 result.get("seconds"), json.dumps(result.get("outputs")) if result.get("outputs") else None,
                 result.get("resumed_from"), result.get("host"), name, stage))

    def reset(self, name: str, stages: Iterable[str]) -> None:
        """Back to pending (outputs that went missing): the stages run again on this invocation."""
        with self.transaction():
            self.conn.executemany("UPDATE stages SET status = 'pending', error = NULL WHERE name = ? AND stage = ?",
                                  [(name, stage) for stage in stages])

    # ---------------------------------------------------------------------------------------------------- reads

    def stages(self, name: Optional[str] = None) -> List[Dict[str, object]]:
        """Stage rows (as dicts, outputs decoded), ordered by object and stage."""
        query = "SELECT * FROM stages" + (" WHERE name = ?" if name else "") + " ORDER BY name, position"
        rows = [dict(row) for row in self.conn.execute(query, (name,) if name else ())]
        for row in rows:
            row["outputs"] = json.loads(row["outputs"]) if row["outputs"] else {}
        return rows

    def next_stage(self, name: str, retry_failed: bool) -> Optional[str]:
        """The first stage of `name` that is not done: None when all are done, or when it failed and failures are
        not retried."""
        for row in self.conn.execute("SELECT stage, status FROM stages WHERE name = ? ORDER BY position", (name,)):
            if row["status"] == "done":
                continue
            if row["status"] == "failed" and not retry_failed:
                return None
            return row["stage"]
        return None

    # ----------------------------------------------------------------------------------------------------- runs

    def begin_run(self, argv: Sequence[str]) -> int:
        with self.transaction():
            cursor = self.conn.execute("INSERT INTO runs (argv, started_at) VALUES (?, ?)",
                                       (json.dumps(list(argv)), time.time()))
        return int(cursor.lastrowid)

    def end_run(self, run_id: int, **values: object) -> None:
        values = {"finished_at": time.time(), **values}
        with self.transaction():
            self.conn.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                              (*values.values(), run_id))

    def runs(self) -> List[Dict[str, object]]:
        return [dict(row) for row in self.conn.execute("SELECT * FROM runs ORDER BY id")]


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind, value, traceback) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


def _changed_keys(old: str, new: str) -> List[str]:
    before, after = json.loads(old), json.loads(new)
    return [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(set(before) | set(after))
            if before.get(k) != after.get(k)]
