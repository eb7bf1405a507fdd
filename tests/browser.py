"""Debian's headless Chromium driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: JSON messages ending in NUL on file descriptors 3 and 4), so a
test opens a page once and gets from that one browser session what ran in it: the value of a
script evaluated in the page, every console message and uncaught exception, and a screenshot.
Standard library only (no websocket client, no browser download)."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


@dataclass
class PageVisit:
    value: object
    console: list[dict] = field(default_factory=list)  # {level, text}
    exceptions: list[str] = field(default_factory=list)
    screenshot: bytes = b""


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int, proc: subprocess.Popen):
        self.w, self.r, self.proc, self.buf, self.next_id, self.events = write_fd, read_fd, proc, b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self.receive(timeout)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buf:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buf += chunk
        message, self.buf = self.buf.split(b"\0", 1)
        return json.loads(message)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        for n, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(n)
        while True:
            event = self.receive(timeout)
            if event.get("method") == method:
                return event
            self.events.append(event)


def visit(page: Path, expression: str, profile: Path, *, width: int = 1400, height: int = 3000) -> PageVisit:
    """Open ``page``, wait for its load event, evaluate ``expression`` (its JSON-able value is
    returned) and take a ``width`` x ``height`` screenshot, all in one browser session."""
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def wire():  # in the child: the pipe ends onto 3 and 4, inheritable (via copies, as they may be 3 or 4)
        reading, writing = os.dup(to_chrome_r), os.dup(from_chrome_w)
        os.dup2(reading, 3)
        os.dup2(writing, 4)

    profile.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                             f"--window-size={width},{height}"], preexec_fn=wire, close_fds=False,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    pipe = _Pipe(to_chrome_w, from_chrome_r, proc)
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=session)
        pipe.events.clear()
        pipe.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        pipe.wait_for("Page.loadEventFired")
        result = pipe.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=session)
        shot = pipe.send("Page.captureScreenshot", {"format": "png"}, session=session)
        out = PageVisit(result.get("result", {}).get("value"), screenshot=base64.b64decode(shot["data"]))
        for event in pipe.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.consoleAPICalled":
                out.console.append({"level": params.get("type"), "text": " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params.get("args", []))})
            elif event.get("method") == "Log.entryAdded":
                entry = params.get("entry", {})
                out.console.append({"level": entry.get("level"), "text": entry.get("text", "")})
            elif event.get("method") == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.exceptions.append(details.get("exception", {}).get("description") or details.get("text", ""))
        try:
            pipe.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError):
            pass
        return out
    finally:
        os.close(to_chrome_w)
        os.close(from_chrome_r)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
