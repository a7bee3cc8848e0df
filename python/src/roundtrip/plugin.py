"""The pytest plugin (entry point `pytest11`): suite files as tests, and the `roundtrip`
fixture. It uses pytest's public API only (`pytest.File`, `pytest.Item`, `repr_failure`
returning a string, `add_report_section`, `user_properties`, `stash`), so that a pytest
release cannot break it by moving its internals.

One engine per pytest process, started on first use: with xdist, one per worker, each
with its own store (`{worker}` in `--roundtrip-store` becomes the worker's id) and its
own runs.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

from roundtrip._api import Session, Suite, Test, evidence_json
from roundtrip.errors import (
    EngineError,
    ExpectationFailed,
    RoundtripError,
    ScenarioFailed,
    SuiteError,
)

_SESSION = pytest.StashKey[Session]()
_REPORTS = pytest.StashKey[Dict[str, pytest.TestReport]]()

DEFAULT_FILES = ["*.roundtrip.yaml", "*.roundtrip.yml"]
DEFAULT_STORE = "sqlite:{root}/.roundtrip/pytest-{worker}.sqlite"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("roundtrip", "roundtrip: end-to-end tests of asynchronous systems")
    group.addoption(
        "--roundtrip-bin",
        dest="roundtrip_bin",
        default=None,
        help="the roundtrip engine binary (default: ROUNDTRIP_BIN, else the installed package's)",
    )
    group.addoption(
        "--roundtrip-store",
        dest="roundtrip_store",
        default=None,
        help="the store every run records into; {worker} is the xdist worker's id "
        f"(default: {DEFAULT_STORE})",
    )
    parser.addini(
        "roundtrip_files",
        type="args",
        default=DEFAULT_FILES,
        help="glob patterns of the suite files collected as tests (default: *.roundtrip.yaml *.roundtrip.yml)",
    )
    parser.addini(
        "roundtrip_suite",
        default="",
        help="the suite file the `roundtrip` fixture opens, relative to the root directory "
        "(or override the `roundtrip_suite` fixture)",
    )
    parser.addini("roundtrip_store", default="", help="as --roundtrip-store")


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def pytest_configure(config: pytest.Config) -> None:
    root = config.rootpath
    store = config.getoption("roundtrip_store") or config.getini("roundtrip_store") or DEFAULT_STORE
    store = store.replace("{worker}", _worker()).replace("{root}", str(root))
    config.stash[_SESSION] = Session(
        store,
        root / ".roundtrip" / f"pytest-{_worker()}.log",
        binary=config.getoption("roundtrip_bin"),
        cwd=root,
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Every run closed and the engine ended; after Ctrl-C, the runs are recorded as
    # interrupted.
    engine_session = session.config.stash.get(_SESSION, None)
    if engine_session is not None:
        engine_session.close_all(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)


def _session(config: pytest.Config) -> Session:
    return config.stash[_SESSION]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


# Suite files as tests.


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Optional[pytest.Collector]:
    patterns = parent.config.getini("roundtrip_files")
    if any(fnmatch.fnmatch(file_path.name, p) for p in patterns):
        return RoundtripFile.from_parent(parent, path=file_path)
    return None


class RoundtripFile(pytest.File):
    """A suite file: one test per scenario, in file order, named as the scenario."""

    def collect(self) -> Iterator["RoundtripItem"]:
        info = _session(self.config).load(self.path)
        lines = self.path.read_text(errors="replace").splitlines()
        for scenario in info["scenarios"]:
            name = scenario["name"]
            # The id shows in the terminal: control characters escaped, `::` (pytest's
            # separator) spelled `:\:`.
            shown = _printable(name).replace("::", ":\\:")
            item = RoundtripItem.from_parent(self, name=shown, scenario=name, line=_line_of(lines, name))
            for tag in scenario.get("tags", []):
                _check_tag(self.config, tag, self.path)
                item.add_marker(tag)
            yield item

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, RoundtripError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)  # type: ignore[return-value]


_TAG_MARK = "a roundtrip suite tag"


def _check_tag(config: pytest.Config, tag: str, path: Path) -> None:
    """Registers `tag` as a mark (so --strict-markers takes it), refusing one that a
    plugin already owns: `timeout` or `flaky` as a bare mark would change the test or
    break the session."""
    owners = {}
    for line in config.getini("markers"):
        name, _, description = line.partition(":")
        owners.setdefault(name.split("(")[0].strip(), description.strip())
    if tag in owners and owners[tag] != _TAG_MARK:
        raise SuiteError(
            f"{path}: the tag `{tag}` is also a pytest mark of its own ({owners[tag][:80]}): "
            "give the scenario another tag"
        )
    if tag not in owners:
        config.addinivalue_line("markers", f"{tag}: {_TAG_MARK}")


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _line_of(lines: list, name: str) -> Optional[int]:
    """The 0-based line where scenario `name` is named, for pytest's location."""
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("- "):
            stripped = stripped[2:].strip()
        if not stripped.startswith("name:"):
            continue
        value = stripped[len("name:"):].split(" #")[0].strip()
        if value in (name, f'"{name}"', f"'{name}'"):
            return i
    return None


class RoundtripItem(pytest.Item):
    """One scenario of a suite file, run in the file's run (opened by its first test,
    closed after its last one)."""

    def __init__(self, *, scenario: str, line: Optional[int] = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.scenario = scenario
        self._line = line

    def runtest(self) -> None:
        session = _session(self.config)
        suite = Suite(str(self.path))
        run = session.open(suite)
        self.user_properties.append(("roundtrip_run", run))
        self.user_properties.append(("roundtrip_store", session.engine.info.get("store", "")))
        out = session.call("run", {"run": run, "scenario": self.scenario})
        if not out["passed"]:
            self.add_report_section("call", "roundtrip evidence", evidence_json(out["result"]))
            self.user_properties.append(("roundtrip_evidence", evidence_json(out["result"])))
            raise ScenarioFailed(out["text"].strip("\n"), out["result"])

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, (ScenarioFailed, RoundtripError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo)  # type: ignore[return-value]

    def reportinfo(self):  # type: ignore[override]
        return self.path, self._line, f"{self.path.name}::{self.scenario}"


def pytest_runtest_teardown(item: pytest.Item, nextitem: Optional[pytest.Item]) -> None:
    # A suite file's run is closed after its last test here (the SUT stopped, the
    # listeners drained), so that the next file's SUT can take its ports.
    if isinstance(item, RoundtripItem) and (nextitem is None or getattr(nextitem, "path", None) != item.path):
        session = _session(item.config)
        try:
            session.close(Suite(str(item.path)))
        except EngineError:
            pass


# The fixture for hand-written tests.


@pytest.fixture(scope="session")
def roundtrip_suite(pytestconfig: pytest.Config) -> Suite:
    """The suite the `roundtrip` fixture opens: the `roundtrip_suite` ini option.
    Override it in a conftest.py to return a path or a `roundtrip.Suite(path, vars=…,
    listen=…)`."""
    value = pytestconfig.getini("roundtrip_suite")
    if not value:
        pytest.fail(
            "the `roundtrip` fixture needs a suite: set `roundtrip_suite = PATH` in the "
            "pytest configuration, or define a `roundtrip_suite` fixture in conftest.py "
            "that returns a path or a roundtrip.Suite",
            pytrace=False,
        )
    return Suite(value)


@pytest.fixture
def roundtrip(request: pytest.FixtureRequest, roundtrip_suite: Any) -> Iterator[Test]:
    """A test's handle on a run of `roundtrip_suite`: `send(...)`, `expect(...)`,
    `expect_absent(...)`. The run is opened once per suite for the session (its
    listeners ready before the first test sends) and each test is recorded in it
    under its node id."""
    session = _session(request.config)
    suite = Suite.of(roundtrip_suite, request.config.rootpath)
    test = session.begin(suite, request.node.nodeid)
    item = request.node
    item.user_properties.append(("roundtrip_run", test.run_id))
    item.user_properties.append(("roundtrip_store", session.engine.info.get("store", "")))

    def attach(failure: ExpectationFailed) -> None:
        item.add_report_section("call", "roundtrip evidence", evidence_json(failure.verdict))
        item.user_properties.append(("roundtrip_evidence", evidence_json(failure.verdict)))

    test.on_failure = attach
    yield test
    report = item.stash.get(_REPORTS, {}).get("call")
    if report is None:
        # Interrupted (Ctrl-C), or another fixture's setup failed: it never finished.
        outcome, reason = "failed", "the test did not finish"
    elif report.passed:
        outcome, reason = "passed", None
    elif report.skipped:
        outcome, reason = "skipped", _reason(report)
    else:
        outcome, reason = "failed", _reason(report)
    test.end(outcome, reason)


def _reason(report: pytest.TestReport) -> str:
    text = report.longreprtext or ""
    lines = [line for line in text.splitlines() if line.strip()]
    # The last line of a failure is its exception; keep it short.
    return (lines[-1] if lines else report.outcome)[:500]


__all__ = ["RoundtripFile", "RoundtripItem"]
