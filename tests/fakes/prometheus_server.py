"""A real Prometheus server on the loopback (the Debian package ``prometheus``), scraping the
given targets, for the ``prometheus`` sensor's tests. Absent binary: the caller skips."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

INSTALL = "apt-get install -y prometheus (Debian/Ubuntu), or put a prometheus binary on PATH"


def binary() -> str | None:
    return shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def prometheus(
    targets: Sequence[str], folder: Path, scrape_interval: str = "200ms"
) -> Iterator[str]:
    """The server's URL, scraping ``targets`` (``host:port``, path ``/metrics``)."""
    exe = binary()
    assert exe is not None, INSTALL
    port = _free_port()
    config = folder / "prometheus.yml"
    quoted = ", ".join(f"'{t}'" for t in targets)
    config.write_text(
        "global:\n"
        f"  scrape_interval: {scrape_interval}\n"
        f"  scrape_timeout: {scrape_interval}\n"
        "scrape_configs:\n"
        "  - job_name: dcgm\n"
        f"    static_configs:\n      - targets: [{quoted}]\n",
        encoding="utf-8",
    )
    log = (folder / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {proc.returncode}: "
                    + (folder / "prometheus.log").read_text(errors="replace")[-2000:]
                )
            try:
                with opener.open(f"{url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus did not get ready in 60 s")
            time.sleep(0.2)
        # its discovery hands static targets to the scraper after about 5 s: wait until
        # every target was scraped, and a few samples are stored
        query = f"{url}/api/v1/query?query=count(up%3D%3D1)"
        while True:
            with opener.open(query, timeout=5) as r:
                result = json.loads(r.read())["data"]["result"]
            if result and int(float(result[0]["value"][1])) == len(targets):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not scrape {list(targets)} in 60 s")
            time.sleep(0.3)
        time.sleep(2.0)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()
