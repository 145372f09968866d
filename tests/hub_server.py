"""A Hugging Face hub endpoint on 127.0.0.1 that serves repositories from local folders and records every file the
client downloads: the real client (`snapshot_download`, through the project's `pretrained` module) lists a
repository, filters it by the caller's patterns and fetches the files, exactly as from huggingface.co.

Answers the three kinds of request the client makes: the repository's revision (`/api/models/ORG/NAME/revision/REV`),
its file tree (`/api/models/ORG/NAME/tree/REV`), and each file (`HEAD`/`GET /ORG/NAME/resolve/REV/PATH`, with the
commit, an ETag that is the file's sha256, and its length). Plain URL downloads (the SAM and VGG16 checkpoints) are
served from `urls` and recorded the same way.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path
from typing import Dict, List, Tuple
from urllib.parse import unquote, urlparse


class FakeHub:
    """`repos`: hub id -> {path in the repository: bytes}; `urls`: URL path -> bytes. `downloads` lists what the client
    fetched, in order: (hub id, path) for hub files, ("url", path) for plain URLs."""

    def __init__(self, repos: Dict[str, Dict[str, bytes]], urls: Dict[str, bytes]) -> None:
        self.repos, self.urls = repos, urls
        self.commits = {repo: hashlib.sha1(repo.encode()).hexdigest() for repo in repos}
        self.downloads: List[Tuple[str, str]] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:  # noqa: N802
                hub._answer(self, body=False)

            def do_GET(self) -> None:  # noqa: N802
                hub._answer(self, body=True)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _repo_of(self, parts: List[str]) -> str:
        repo = "/".join(parts[:2])
        if repo not in self.repos:
            raise KeyError(repo)
        return repo

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        parts = path.strip("/").split("/")
        try:
            if parts[:2] == ["api", "models"] and len(parts) >= 5 and parts[4] == "revision":
                repo = self._repo_of(parts[2:])
                files = sorted(self.repos[repo])
                return self._json(handler, {"id": repo, "sha": self.commits[repo], "private": False,
                                            "siblings": [{"rfilename": name} for name in files]}, body)
            if parts[:2] == ["api", "models"] and len(parts) >= 5 and parts[4] == "tree":
                repo = self._repo_of(parts[2:])
                return self._json(handler, [{"type": "file", "path": name, "size": len(data),
                                             "oid": hashlib.sha1(data).hexdigest()}
                                            for name, data in sorted(self.repos[repo].items())], body)
            if len(parts) >= 5 and parts[2] == "resolve":
                repo = self._repo_of(parts)
                name = "/".join(parts[4:])
                data = self.repos[repo][name]
                if body:
                    self.downloads.append((repo, name))
                return self._bytes(handler, data, body, {"X-Repo-Commit": self.commits[repo],
                                                         "ETag": f'"{hashlib.sha256(data).hexdigest()}"'})
            if path in self.urls:
                if body:
                    self.downloads.append(("url", path))
                return self._bytes(handler, self.urls[path], body, {})
        except KeyError:
            pass
        handler.send_response(404)
        handler.send_header("X-Error-Code", "EntryNotFound" if len(parts) > 4 else "RepoNotFound")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    @staticmethod
    def _json(handler, value, body: bool) -> None:
        FakeHub._bytes(handler, json.dumps(value).encode(), body, {"Content-Type": "application/json"})

    @staticmethod
    def _bytes(handler, data: bytes, body: bool, headers: Dict[str, str]) -> None:
        handler.send_response(200)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)


def folder_files(folder: Path) -> Dict[str, bytes]:
    """Every file of a model folder, by its path inside it."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}
