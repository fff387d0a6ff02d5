"""Opening a page in headless Chromium and asking it what a reader would see, over the DevTools protocol on
the browser's own pipe (--remote-debugging-pipe: JSON messages ended by a NUL byte, commands on fd 3,
answers and events on fd 4). No Python package and no port: nothing outside this process can talk to it.
"""
import fcntl
import json
import os
import select
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

# What every <img> of the page became once the page loaded: a broken or missing image has naturalWidth 0.
IMAGES_JS = "[...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}))"


@dataclass
class PageView:
    images: list[dict]
    console_errors: list[str] = field(default_factory=list)


class Browser:
    def __init__(self, executable: str, profile: Path, timeout_s: float = 60):
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        self.timeout_s, self._buffer, self._next_id, self.events = timeout_s, b"", 0, []

        def child_fds():  # the browser expects the pipe's ends at fds 3 and 4, whatever numbers they have here
            read, write = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_read, answers_write))
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=child_fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands_read)
        os.close(answers_write)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        wanted = self._next_id
        answer = self.wait_for(lambda m: m.get("id") == wanted)
        assert "error" not in answer, f"{method}: {answer['error']}"
        return answer.get("result", {})

    def wait_for(self, match) -> dict:
        end = time.monotonic() + self.timeout_s
        while time.monotonic() < end:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                self.events.append(message)
                if match(message):
                    return message
            ready, _, _ = select.select([self._answers], [], [], 0.5)
            if ready:
                chunk = os.read(self._answers, 1 << 20)
                if not chunk:
                    raise RuntimeError("the browser closed its pipe")
                self._buffer += chunk
        raise TimeoutError(f"no answer from the browser within {self.timeout_s} s")

    def open(self, path: Path) -> PageView:
        """Loads the file in a new tab; its images once loaded, and every console error, failed load or
        uncaught exception the page caused."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        start = len(self.events)
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session)
        self.wait_for(lambda m: m.get("method") == "Page.loadEventFired" and m.get("sessionId") == session)
        result = self.send("Runtime.evaluate", {"expression": IMAGES_JS, "returnByValue": True}, session)
        return PageView(result["result"]["value"], _errors(self.events[start:], session))

    def close(self) -> None:
        try:
            os.write(self._commands, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.process.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self._commands)
            os.close(self._answers)


def _errors(events: list[dict], session: str) -> list[str]:
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if event.get("sessionId") != session:
            continue
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        elif method == "Runtime.exceptionThrown":
            found.append(f"exception: {params['exceptionDetails'].get('text')}")
    return found
