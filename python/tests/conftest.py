"""The plugin's tests run pytest on small projects, in subprocesses, against the real
engine binary: `ROUNDTRIP_BIN` (CI uses the debug build, target/debug/roundtrip), else
the installed package's. The suites use `dir` channels (a directory the producer writes
and the listener watches), so an event comes back as an observation without a SUT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import roundtrip

pytest_plugins = ["pytester"]

#: A suite whose one channel is both sent to and listened on.
LOOP = """\
name: loop
channels:
  box: { dir: { path: box, suffix: .json } }
scenarios:
  - name: one event comes back
    send: [ { to: box, body: { n: 1 } } ]
    expect: [ { on: box, match: { n: 1 }, within: 5s } ]
  - name: a second event comes back
    tags: [second, smoke]
    send: [ { to: box, body: { n: 2 } } ]
    expect: [ { on: box, match: { n: 2 }, within: 5s } ]
  - name: the wrong value never comes
    send: [ { to: box, body: { n: 3, item: cup } } ]
    expect: [ { on: box, match: { n: 3, item: mug }, within: 300ms } ]
"""

#: A conftest that points the fixture at the loop suite, listening on its channel.
FIXTURE_CONFTEST = """\
import pytest
import roundtrip as rt

@pytest.fixture(scope="session")
def roundtrip_suite():
    return rt.Suite("loop.roundtrip.yaml", listen=["box"])
"""


def plugin_args() -> List[str]:
    """`-p roundtrip.plugin` when the package is not installed (its entry point then
    registers the plugin by itself, and naming it again would register it twice)."""
    installed = any(ep.name == "roundtrip" for ep in metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "roundtrip.plugin"]


class Project:
    """A directory with suites and tests, and pytest run on it in a subprocess."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        env = dict(os.environ)
        source = str(Path(roundtrip.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [source, env.get("PYTHONPATH", "")] if p)
        env.pop("PYTEST_XDIST_WORKER", None)
        env.pop("PYTEST_ADDOPTS", None)
        env.update(extra or {})
        return env

    def command(self, *args: str) -> List[str]:
        # The cache is the project's own (tmp_path), for --lf.
        return [sys.executable, "-m", "pytest", *plugin_args(), *args]

    def pytest(self, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(*args),
            cwd=self.root,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def spawn(self, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        """pytest in the background, with SIGINT at its default: a shell that runs this
        suite in the background (CI's) starts it with SIGINT ignored, and Python then
        installs no KeyboardInterrupt handler in the child."""
        return subprocess.Popen(
            self.command(*args),
            cwd=self.root,
            env=self.env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


@pytest.fixture
def project(tmp_path: Path) -> Project:
    p = Project(tmp_path)
    p.write("loop.roundtrip.yaml", LOOP)
    return p


def store_runs(store: Path) -> List[tuple]:
    """(run id, status, scenario names) of every run in a SQLite store, newest first, as
    the engine's own `roundtrip runs` and `roundtrip report --json` tell them."""
    import json

    binary = roundtrip.find_roundtrip_bin()
    url = f"sqlite:{store}"
    listing = subprocess.run(
        [binary, "runs", "--store", url], capture_output=True, text=True, check=True
    ).stdout
    out = []
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        run_id, status = fields[0], fields[1]
        report = store.parent / f"{run_id}.json"
        subprocess.run(
            [binary, "report", run_id, "--store", url, "--json", str(report)],
            capture_output=True,
            text=True,
        )
        names = [s["name"] for s in json.loads(report.read_text())["runs"][0]["scenarios"]]
        out.append((run_id, status, names))
    return out
