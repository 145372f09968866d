"""The driver of `sin-batch`: reads the manifest, brings the store up to date, and runs every object's next stages as
Ray tasks, one task per object and stage, at most `max_concurrent` objects at a time.

Local Ray by default (a fresh instance for the run, `address="local"`, with this machine's CPUs; shut down at the
end); `address` joins an existing cluster instead. Ray binds its GCS server, raylet and workers to every network
interface and has no setting that keeps them on loopback, so a local instance runs with Ray's token authentication
on and a token made for the run (known to the driver and the processes it starts), and the run says so first.
A task asks for one GPU when the cluster has GPUs, else for its share of the CPUs (Ray sets OMP_NUM_THREADS in the
worker to the CPUs a task holds, and the command inherits it). Only the driver writes the store; a task reports its
result and the driver records the stage as done once it sees the stage's outputs on disk. Ray is imported here only,
inside functions: the package imports without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from single_image_nerf.batch import report
from single_image_nerf.batch.manifest import read_manifest
from single_image_nerf.batch.stages import (STAGES, ObjectPaths, ObjectPlan, Settings, caption_note, missing_outputs,
                                            resolve, run_stage)
from single_image_nerf.batch.store import Store
from single_image_nerf.errors import UserInputError

LOCAL_RAY_NOTICE = (
    "local Ray: its GCS server, raylet and workers listen on every network interface (Ray cannot keep them on "
    "loopback); token authentication is on, with a token made for this run that only its processes know",
    "local Ray: the autoscaler's read-only metrics are served without a token on port 44217 of every interface; "
    "docs/batch.md, 'What a local batch exposes', says more")
"""The first lines of a run that starts a local Ray instance."""
MISSING_RAY = 'sin-batch needs Ray, an optional extra: pip install -e ".[batch]" (or: pip install "ray>=2.9")'
STORE_NAME = "batch.sqlite"


@dataclass(frozen=True)
class BatchOptions:
    source: str
    output: Path
    settings: Settings
    device: Optional[str] = None
    retry_failed: bool = False
    address: Optional[str] = None
    max_concurrent: Optional[int] = None
    progress: bool = True


def ray_available() -> bool:
    """Whether Ray can be imported (a module set to None in sys.modules counts as missing)."""
    try:
        import ray  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        return False
    return True


def stage_task(stage: str, plan_json: str, out: str, device: Optional[str]) -> Dict[str, object]:
    """Body of the Ray task: one stage of one object, on the device the task holds unless one is forced."""
    import ray  # pylint: disable=import-outside-toplevel

    chosen = device or ("cuda" if ray.get_gpu_ids() else "cpu")
    return run_stage(stage, ObjectPlan.from_json(plan_json), Path(out), chosen)


def _lock(out: Path):
    """Hold OUT/.sin-batch.lock for the life of the process: two drivers never share one store."""
    handle = open(out / ".sin-batch.lock", "w")  # pylint: disable=consider-using-with
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UserInputError(f"another sin-batch is running on {out}; wait for it or stop it first") from None
    return handle


def _reset_missing(store: Store, out: Path, names: Sequence[str]) -> None:
    """A done stage whose outputs are gone runs again, with every stage after it."""
    for name in names:
        rows = store.stages(name)
        for index, row in enumerate(rows):
            if row["status"] == "done" and missing_outputs(str(row["stage"]), ObjectPaths.of(out, name)):
                store.reset(name, [str(r["stage"]) for r in rows[index:]])
                break


def _error_of(stage: str, error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error
    text = " ".join(str(cause).split()) or type(cause).__name__
    return f"{stage}: {type(cause).__name__}: {text[:300]}"


def _resources(ray_module) -> Tuple[int, int, int]:
    """(CPUs, GPUs, CPUs of the largest node) of the cluster."""
    total = ray_module.cluster_resources()
    nodes = [node.get("Resources", {}) for node in ray_module.nodes() if node.get("Alive")]
    largest = max((int(node.get("CPU", 0)) for node in nodes), default=int(total.get("CPU", 1)))
    return int(total.get("CPU", 1)), int(total.get("GPU", 0)), max(largest, 1)


def default_concurrency(cpus: int, gpus: int) -> int:
    """Objects at a time: one per GPU; on CPUs only, one per 4 CPUs (1 on a machine with fewer than 4)."""
    if gpus:
        return gpus
    return max(1, cpus // 4)


def run_batch(options: BatchOptions, argv: Sequence[str] = ()) -> int:
    """Run the batch; returns the exit status (0: every object done, 1: some failed or unfinished)."""
    plans = [resolve(row, options.settings) for row in read_manifest(options.source)]
    note = caption_note(plans)
    if note:
        print(note)
    out = Path(options.output).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    store = Store(out / STORE_NAME)
    try:
        store.register(plans)
        names = [plan.name for plan in plans]
        _reset_missing(store, out, names)
        todo = [name for name in names if store.next_stage(name, options.retry_failed)]
        run_id = store.begin_run(list(argv))
        timings: Dict[str, object] = {"stages_run": 0}
        if todo:
            try:
                timings = _run_with_ray(options, store, out, todo)
            except UserInputError:  # Ray did not start: the run is recorded as having run nothing
                store.end_run(run_id, **timings)
                raise
        else:
            print(f"nothing to run: every object in {out} is done" +
                  ("" if options.retry_failed or not _any_failed(store, names) else
                   " or failed (--retry-failed runs failed stages again)"))
        rows = store.stages()
        print(report.summary_table(rows, names))
        index = report.write_index(out, rows, names)
        print(f"index: {index}")
        store.end_run(run_id, **timings)
        return 0 if all(report.object_status(store.stages(name)) == "done" for name in names) else 1
    finally:
        store.close()
        lock.close()


def _any_failed(store: Store, names: Sequence[str]) -> bool:
    return any(row["status"] == "failed" for name in names for row in store.stages(name))


def check_cluster_answers(address: str, timeout: float = 5.0) -> None:
    """One line at once when nothing listens at a `host:port` (or `ray://host:port`) address: Ray itself retries for
    minutes before it gives up. "auto" and other forms are left to Ray."""
    host_port = address.split("://", 1)[1] if "://" in address else address
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise UserInputError(
            f"no Ray cluster answers at --address {address} ({error.strerror or type(error).__name__}); start one "
            f"there with `ray start --head`, or leave --address out to run on a local Ray instance") from None


def _refresh_ray_authentication() -> bool:
    """Make this process's Ray read RAY_AUTH_* again (it caches them when first imported); whether token
    authentication is now on. False for a Ray without token authentication."""
    try:
        from ray._raylet import (  # pylint: disable=import-outside-toplevel,no-name-in-module
            AuthenticationMode, AuthenticationTokenLoader, Config, get_authentication_mode)
    except ImportError:
        return False
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    return get_authentication_mode() == AuthenticationMode.TOKEN


@contextlib.contextmanager
def local_ray_authentication():
    """Ray's token authentication on (RAY_AUTH_MODE=token) with a fresh 256-bit token in RAY_AUTH_TOKEN, for the
    local instance this process starts and every process it starts; the environment is restored afterwards."""
    import ray  # pylint: disable=import-outside-toplevel

    keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    try:
        if not _refresh_ray_authentication():
            raise UserInputError(
                f"Ray {ray.__version__} has no token authentication, and a local instance would leave its servers "
                "open to the network; upgrade Ray (pip install -U ray)")
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _refresh_ray_authentication()


def _run_with_ray(options: BatchOptions, store: Store, out: Path, todo: List[str]) -> Dict[str, object]:
    if options.address:
        return _run_on_ray(options, store, out, todo)
    for line in LOCAL_RAY_NOTICE:
        print(line, flush=True)
    with local_ray_authentication():
        return _run_on_ray(options, store, out, todo)


def ray_start_failure(address: Optional[str], out: Path, error: BaseException) -> str:
    """The line for Ray failing to start or to join (`error`, Ray's own exception): what failed, that nothing ran
    and nothing of the catalogue changed, and what to try."""
    reason = " ".join(str(error).split())[:200] or type(error).__name__
    if address:
        what, tips = f"join the Ray cluster at {address}", "check the cluster (ray status on its head node)"
    else:
        what, tips = "start a local Ray instance", (
            "on a busy machine, wait for it to quieten; stop leftover Ray instances (ray stop); make room in Ray's "
            "temporary folder (RAY_TMPDIR, default /tmp)")
    return (f"cannot {what} ({type(error).__name__}: {reason}); nothing was run and every object in {out} keeps "
            f"its state: {tips}, then rerun the same command to resume")


def _run_on_ray(options: BatchOptions, store: Store, out: Path, todo: List[str]) -> Dict[str, object]:
    import ray  # pylint: disable=import-outside-toplevel
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    started = time.perf_counter()
    try:
        if options.address:
            check_cluster_answers(options.address)
            ray.init(address=options.address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                     logging_level=logging.WARNING, log_to_driver=False)
    except Exception as error:  # pylint: disable=broad-except  # Ray's start-up failures: a timeout is a bare Exception
        with contextlib.suppress(Exception):
            ray.shutdown()  # what started before the failure
        raise UserInputError(ray_start_failure(options.address, out, error)) from None
    ray_start = time.perf_counter() - started
    stages_run = 0
    try:
        cpus, gpus, largest = _resources(ray)
        concurrent = options.max_concurrent or default_concurrency(cpus, gpus)
        cpus_per_task = max(1, min(largest, cpus // max(gpus or concurrent, 1)))
        task = ray.remote(max_retries=2)(stage_task).options(num_cpus=cpus_per_task, num_gpus=1 if gpus else 0)
        queue = deque(todo)
        running: Dict[object, Tuple[str, str]] = {}
        remaining = {name: len(STAGES) - STAGES.index(store.next_stage(name, options.retry_failed)) for name in todo}
        bar = tqdm(total=sum(remaining.values()), unit="stage", desc="sin-batch", disable=not options.progress,
                   file=sys.stderr, dynamic_ncols=True)

        def submit(name: str, stage: str) -> None:
            store.mark_running(name, stage)
            running[task.remote(stage, store.plan(name).to_json(), str(out), options.device)] = (name, stage)
            bar.set_postfix_str(", ".join(f"{n}:{s}" for n, s in running.values()), refresh=True)

        while queue or running:
            while queue and len(running) < concurrent:
                name = queue.popleft()
                submit(name, str(store.next_stage(name, options.retry_failed)))
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                name, stage = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as error:
                    result = {"ok": False, "error": _error_of(stage, error)}
                stages_run += 1
                if result.get("ok"):
                    missing = missing_outputs(stage, ObjectPaths.of(out, name))
                    if missing:
                        result = {**result, "ok": False, "error": f"{stage}: the driver cannot see {missing}"}
                store.mark_finished(name, stage, result)
                if stage == "mesh" and result.get("ok"):
                    report.write_preview(out, name)  # the index's 3D view, made while the other stages run
                remaining[name] -= 1
                bar.update(1)
                following = store.next_stage(name, retry_failed=False) if result.get("ok") else None
                if following:
                    submit(name, following)
                else:
                    bar.update(remaining[name])  # a failed object's later stages will not run
                    remaining[name] = 0
                    if not result.get("ok"):
                        bar.write(f"{name}: {result['error']}")
            bar.set_postfix_str(", ".join(f"{n}:{s}" for n, s in running.values()), refresh=True)
        bar.close()
    finally:
        stopping = time.perf_counter()
        ray.shutdown()
        ray_stop = time.perf_counter() - stopping
    return {"ray_start_s": ray_start, "ray_stop_s": ray_stop, "max_concurrent": concurrent, "stages_run": stages_run}
