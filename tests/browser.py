"""Headless Chromium driven through chromedriver (Debian's `chromium`, `chromium-driver`), for
testing `kvclient web` as a person sees it.

The W3C WebDriver protocol is a handful of JSON requests over HTTP; the standard library's
urllib speaks them, so no Selenium: a dependency for six calls would not earn its place.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.cluster import free_port, terminate, wait_until

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium_binary() -> str | None:
    return next((path for name in CHROMIUM if (path := shutil.which(name))), None)


class Browser:
    """One headless browser window, `width` × `height` CSS pixels."""

    def __init__(self, logdir: Path, width: int = 1400, height: int = 1000) -> None:
        driver, binary = shutil.which("chromedriver"), chromium_binary()
        assert driver and binary, "set-up installs chromium and chromium-driver"
        self.port = free_port()
        with (logdir / "chromedriver.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [driver, f"--port={self.port}"], stdout=log, stderr=subprocess.STDOUT
            )
        self.base = f"http://127.0.0.1:{self.port}"
        wait_until(self._ready, 20, "chromedriver")
        options = {
            "binary": binary,
            "args": [
                "--headless=new",
                "--no-sandbox",  # we run as root in CI
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--window-size={width},{height}",
            ],
        }
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _ready(self) -> bool:
        try:
            return bool(self._call("GET", "/status")["ready"])
        except OSError:
            return False

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def _in_session(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self._in_session("POST", "/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Run JavaScript in the page (`return ...` for a value)."""
        return self._in_session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._in_session("GET", "/screenshot")))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._call("DELETE", f"/session/{self.session}")
        terminate(self.proc)
