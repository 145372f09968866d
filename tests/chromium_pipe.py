"""Headless Chromium driven through the DevTools protocol over a pipe (--remote-debugging-pipe: commands on the
browser's fd 3, replies and events on its fd 4, JSON messages ending in a NUL byte): open a page, evaluate script
in it, press and drag the mouse, take screenshots, and keep the page's own network requests and console and
security messages (events of the page's session only, not the browser's background traffic)."""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--remote-debugging-pipe", "--proxy-server=http://127.0.0.1:1", "--proxy-bypass-list=<-loopback>"]
"""Software WebGL (SwiftShader), and every request the browser would send to a network goes to a closed port."""


class Browser:
    def __init__(self, profile: Path, width: int = 900, height: int = 600):
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def child_fds():
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, pass_fds=(3, 4, to_browser_read, from_browser_write))
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events: List[Dict] = []
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t["targetId"] for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _read_message(self, deadline: float) -> Dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.time()))
            if not ready:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, timeout: float = 60.0, **params) -> Dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply and reply.get("sessionId") == getattr(self, "session", None):
                self.events.append(reply)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def wait_for(self, expression: str, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while not self.evaluate(expression):
            if time.time() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            time.sleep(0.2)

    def screenshot(self):
        """The page as an (H, W, 3) uint8 array."""
        import numpy as np
        from PIL import Image

        data = base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def drag(self, x: float, y: float, dx: float, dy: float = 0.0, steps: int = 12) -> None:
        """Press the left button at (x, y), move by (dx, dy) in `steps`, release."""
        mouse = lambda kind, px, py, buttons: self.call(  # noqa: E731
            "Input.dispatchMouseEvent", session=True, type=kind, x=px, y=py, button="left", buttons=buttons,
            clickCount=1 if kind != "mouseMoved" else 0)
        mouse("mousePressed", x, y, 1)
        for step in range(1, steps + 1):
            mouse("mouseMoved", x + dx * step / steps, y + dy * step / steps, 1)
            time.sleep(0.02)
        mouse("mouseReleased", x + dx, y + dy, 0)

    def requests(self) -> List[str]:
        """URLs of every request the page made so far (file:, data: and blob: ones included)."""
        self.evaluate("0")  # collects the events that arrived meanwhile
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def messages(self) -> List[str]:
        """The page's console and log messages (Content Security Policy violations are among them)."""
        self.evaluate("0")
        lines = []
        for event in self.events:
            if event["method"] == "Log.entryAdded":
                lines.append(f"{event['params']['entry']['level']}: {event['params']['entry']['text']}")
            elif event["method"] == "Runtime.consoleAPICalled":
                lines.append(f"{event['params']['type']}: " + " ".join(
                    str(arg.get("value", arg.get("description", ""))) for arg in event["params"]["args"]))
            elif event["method"] == "Runtime.exceptionThrown":
                lines.append(f"exception: {event['params']['exceptionDetails'].get('text')}")
        return lines

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)

