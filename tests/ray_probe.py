"""What a running local Ray instance exposes, seen from outside it: the listening TCP sockets of a process tree, and
whether Ray's GCS server answers a call without its token, with a wrong one, and with the token its own process
holds (read from /proc/PID/environ, as only the same user can)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple


def listening(pids: Iterable[int]) -> List[Tuple[int, str, str, int]]:
    """(pid, process name, address, port) of every listening TCP socket of `pids`."""
    import psutil

    found = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for connection in process.net_connections("inet"):
                if connection.status == psutil.CONN_LISTEN:
                    found.append((pid, process.name(), connection.laddr.ip, connection.laddr.port))
        except psutil.Error:
            continue
    return found


def environment_of(pid: int) -> Dict[str, str]:
    pairs = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    return dict(pair.decode(errors="replace").split("=", 1) for pair in pairs if b"=" in pair)


def gcs_calls(pids: Iterable[int]) -> Optional[Dict[str, object]]:
    """None while no gcs_server of `pids` listens yet; else the sockets of `pids` and the status code of one
    GetAllNodeInfo call to the GCS server per token: none, a wrong one, the run's."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    sockets = listening(pids)
    gcs = [(pid, port) for pid, name, _, port in sockets if name == "gcs_server"]
    if not gcs:
        return None
    pid, port = gcs[0]
    token = environment_of(pid).get("RAY_AUTH_TOKEN", "")
    codes = {}
    for label, metadata in (("none", ()), ("wrong", (("authorization", "Bearer " + "0" * 64),)),
                            ("run", (("authorization", "Bearer " + token),))):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
            try:
                stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), metadata=metadata, timeout=10)
                codes[label] = "OK"
            except grpc.RpcError as error:
                codes[label] = error.code().name
    return {"sockets": sockets, "codes": codes, "token": token, "mode": environment_of(pid).get("RAY_AUTH_MODE")}
