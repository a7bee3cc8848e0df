"""The Python API: a `Session` (one engine, the runs it has open), a `Suite` to open,
and the `Test` handle that the `roundtrip` fixture yields."""

from __future__ import annotations

import base64 as _b64
import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from roundtrip import __version__
from roundtrip._find import find_roundtrip_bin
from roundtrip.client import Engine
from roundtrip.errors import EngineError, ExpectationFailed, SendFailed, UsageError

__all__ = ["Duration", "Sent", "Session", "Suite", "Test"]

#: A duration: `"15s"`, `"250ms"`, `"1m 30s"`, a number of seconds, or a timedelta.
Duration = Union[str, int, float, _dt.timedelta]

_MISSING: Any = object()


def _duration(value: Duration, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, _dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{what}` is a duration: '15s', '250ms', seconds as a number, or a timedelta")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"`{what}` must be a finite number of seconds")
    if value < 0:
        raise ValueError(f"`{what}` must not be negative")
    ms = round(value * 1000)
    if value > 0 and ms == 0:
        raise ValueError(f"`{what}` is {value} s: durations are counted in whole milliseconds")
    return f"{ms}ms"


@dataclass(frozen=True)
class Suite:
    """A suite file to open a run of, and how.

    - `path`: the suite file (relative paths are taken from pytest's root directory);
    - `vars`: values for `{{ env("NAME") }}`, above the environment (as `--var`);
    - `env_files`: env files below the environment (as `--env-file`);
    - `listen`: the channels to listen on besides those its scenarios expect on and its
      SUT names (nothing else is listened on: a listener on one of the system's inputs
      would take the system's messages).
    """

    path: Union[str, "os.PathLike[str]"]
    vars: Mapping[str, str] = field(default_factory=dict)
    env_files: Sequence[str] = ()
    listen: Optional[Sequence[str]] = None

    @staticmethod
    def of(value: Union["Suite", str, "os.PathLike[str]"], root: Path) -> "Suite":
        if isinstance(value, Suite):
            suite = value
        elif isinstance(value, (str, os.PathLike)):
            suite = Suite(value)
        else:
            raise TypeError(
                "the `roundtrip_suite` fixture returns a suite file's path or a "
                f"roundtrip.Suite, not {type(value).__name__}"
            )
        path = Path(suite.path)
        if not path.is_absolute():
            path = root / path
        return Suite(str(path), dict(suite.vars), tuple(suite.env_files), suite.listen)

    def key(self) -> Tuple[Any, ...]:
        listen = None if self.listen is None else tuple(self.listen)
        return (str(self.path), tuple(sorted(self.vars.items())), tuple(self.env_files), listen)

    def params(self) -> Dict[str, Any]:
        params: Dict[str, Any] = {"suite": str(self.path)}
        if self.vars:
            params["vars"] = dict(self.vars)
        if self.env_files:
            params["env_files"] = [str(f) for f in self.env_files]
        if self.listen is not None:
            params["listen"] = list(self.listen)
        return params


class Session:
    """One engine for this process, started on first use, and the runs it has open.

    An engine that died is started again on next use; the runs it had are gone (the
    store keeps what they recorded), and a test that was using one fails with the
    engine's error.
    """

    def __init__(
        self,
        store: str,
        log: Path,
        *,
        binary: Optional[str] = None,
        cwd: Optional[Path] = None,
    ):
        self.store = store
        self.log = log
        self.cwd = cwd
        self._binary = binary
        self._engine: Optional[Engine] = None
        self._runs: Dict[Tuple[Any, ...], str] = {}
        self._loaded: Dict[str, Dict[str, Any]] = {}
        self.generation = 0
        #: How the last engine ended, when it ended under a test.
        self.ended: Optional[str] = None

    @property
    def binary(self) -> str:
        if self._binary is None:
            self._binary = find_roundtrip_bin()
        return self._binary

    @property
    def engine(self) -> Engine:
        if self._engine is None or not self._engine.alive:
            if self._engine is not None:
                self.ended = self._engine.death()
            self._runs.clear()
            self._engine = Engine(
                self.binary,
                self.store,
                self.log,
                cwd=self.cwd,
                client=f"roundtrip-python/{__version__}",
            )
            self.generation += 1
        return self._engine

    def call(self, method: str, params: Dict[str, Any]) -> Any:
        __tracebackhide__ = True
        return self.engine.call(method, params)

    def serves(self, generation: int) -> bool:
        """Whether the engine of `generation` is still the one running."""
        return (
            self._engine is not None
            and self._engine.alive
            and self.generation == generation
        )

    def load(self, path: Union[str, "os.PathLike[str]"]) -> Dict[str, Any]:
        """The suite file's name, scenarios and channels; raises `SuiteError`."""
        key = str(path)
        if key not in self._loaded:
            self._loaded[key] = self.call("load", {"suite": key})
        return self._loaded[key]

    def open(self, suite: Suite) -> str:
        """The id of a run of `suite`, opened on first use (listeners ready, SUT up)."""
        __tracebackhide__ = True
        engine = self.engine
        key = suite.key()
        if key not in self._runs:
            self._runs[key] = engine.call("open", suite.params())["run"]
        return self._runs[key]

    def close(self, suite: Suite) -> Optional[Dict[str, Any]]:
        """Closes the run of `suite`, if one is open; its summary."""
        run = self._runs.pop(suite.key(), None)
        if run is None or self._engine is None or not self._engine.alive:
            return None
        return self._engine.call("close", {"run": run})

    def close_all(self, interrupted: bool = False) -> None:
        """Closes every run and ends the engine (see `Engine.close`)."""
        engine, self._engine = self._engine, None
        self._runs.clear()
        if engine is not None:
            engine.close(interrupted=interrupted)

    def begin(self, suite: Suite, name: str) -> "Test":
        __tracebackhide__ = True
        run = self.open(suite)
        scope = self.call("begin", {"run": run, "test": name})["scope"]
        return Test(self, run, scope, name)


@dataclass(frozen=True)
class Sent:
    """A sent event: its correlation id ties what it caused to it."""

    correlation_id: str
    index: int
    channel: str
    sent_at: int
    size: int


def _event_ids(events: Union[None, Sent, str, Iterable[Union[Sent, str]]]) -> Optional[List[str]]:
    if events is None:
        return None
    if isinstance(events, (Sent, str)):
        events = [events]
    ids = [e.correlation_id if isinstance(e, Sent) else str(e) for e in events]
    if not ids:
        raise UsageError("`events` is empty: leave it out to judge every event sent so far")
    return ids


class Test:
    """A test's handle on a run: send events, then expect what they cause.

    Every expectation applies to each event the test sent before it (or to those
    `events=` names), and its SLA runs from each event's send, whenever you ask: an
    output that arrived before `expect` is judged by when it arrived.
    """

    def __init__(self, session: Session, run: str, scope: str, name: str):
        self._session = session
        self._generation = session.generation
        self.run_id = run
        self.scope = scope
        self.name = name
        self.sent: List[Sent] = []
        #: Called with each failed expectation's verdict before it is raised (the pytest
        #: plugin attaches the evidence to the test's report).
        self.on_failure: Optional[Callable[[ExpectationFailed], None]] = None

    @property
    def engine_pid(self) -> Optional[int]:
        """The process id of the engine serving this test (for its log, or a debugger)."""
        engine = self._session._engine
        return engine.pid if engine is not None else None

    def _call(self, method: str, params: Dict[str, Any]) -> Any:
        __tracebackhide__ = True
        if not self._session.serves(self._generation):
            engine = self._session._engine
            why = engine.death() if engine is not None and not engine.alive else self._session.ended
            raise EngineError(f"the engine this test was using has ended; its run is gone: {why}")
        return self._session.call(method, params)

    def send(
        self,
        to: str,
        body: Any = _MISSING,
        *,
        text: Optional[str] = None,
        base64: Optional[str] = None,
        data: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Sent:
        """Sends one event to channel `to`: a JSON `body`, a `text`, or binary `data`
        (or `base64`), with `headers`. Strings are templates, as in a suite
        (`{{ correlation_id }}`, `{{ uuid() }}`, `{{ run_id }}`). Raises `SendFailed` if
        the transport did not accept it (it is recorded all the same)."""
        __tracebackhide__ = True
        step: Dict[str, Any] = {"to": to}
        given = [k for k, v in (("body", body is not _MISSING), ("text", text is not None),
                                ("base64", base64 is not None), ("data", data is not None)) if v]
        if len(given) > 1:
            raise UsageError(f"give one of `body`, `text`, `base64` or `data`, not {' and '.join(given)}")
        if body is not _MISSING:
            step["body"] = body
        if text is not None:
            step["text"] = text
        if base64 is not None:
            step["base64"] = base64
        if data is not None:
            step["base64"] = _b64.b64encode(bytes(data)).decode()
        if headers:
            step["headers"] = dict(headers)
        out = self._call("send", {"scope": self.scope, "send": step})
        if out.get("error"):
            raise SendFailed(f"the send to `{to}` failed: {out['error']}", out)
        sent = Sent(out["correlation_id"], out["index"], out["channel"], out["sent_at"], out["size"])
        self.sent.append(sent)
        return sent

    def expect(
        self,
        on: str,
        *,
        within: Duration,
        match: Any = _MISSING,
        where: Optional[Sequence[Mapping[str, Any]]] = None,
        schema: Optional[Mapping[str, Any]] = None,
        text: Union[None, str, Mapping[str, Any]] = None,
        bytes: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, Any]] = None,
        meta: Optional[Mapping[str, Any]] = None,
        count: Optional[int] = None,
        at_least: Optional[int] = None,
        grace: Optional[Duration] = None,
        ordered_by: Optional[str] = None,
        events: Optional[Iterable[Union[Sent, str]]] = None,
    ) -> List[Dict[str, Any]]:
        """Waits until, for each event, what is described arrives on channel `on`
        within `within` of its send (at least once, or `count` times exactly, or
        `at_least` times), and returns the matching observations (dicts with `json`,
        `text`, `headers`, `meta`, `received_at`, …). Raises `ExpectationFailed` with
        the evidence otherwise.

        The checks are the suite's: `match` (a JSON subset), `where` (JSONPath
        predicates), `schema`, `text` (a string is `{"equals": …}`), `bytes`, `headers`,
        `meta`; `grace` keeps listening after the SLA so that a late arrival is told
        from a lost one.
        """
        __tracebackhide__ = True
        expectation = self._matchers(on, match, where, schema, text, bytes, headers, meta)
        expectation["within"] = _duration(within, "within")
        if count is not None:
            expectation["count"] = count
        if at_least is not None:
            expectation["at_least"] = at_least
        if grace is not None:
            expectation["grace"] = _duration(grace, "grace")
        if ordered_by is not None:
            expectation["ordered_by"] = ordered_by
        return self._expect(expectation, events)

    def expect_absent(
        self,
        on: str,
        *,
        within: Duration,
        match: Any = _MISSING,
        where: Optional[Sequence[Mapping[str, Any]]] = None,
        schema: Optional[Mapping[str, Any]] = None,
        text: Union[None, str, Mapping[str, Any]] = None,
        bytes: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, Any]] = None,
        meta: Optional[Mapping[str, Any]] = None,
        events: Optional[Iterable[Union[Sent, str]]] = None,
    ) -> None:
        """Waits the whole window: nothing described may arrive on channel `on` within
        `within` of each event's send. Raises `ExpectationFailed` naming what did."""
        __tracebackhide__ = True
        expectation = self._matchers(on, match, where, schema, text, bytes, headers, meta)
        expectation["none_within"] = _duration(within, "within")
        self._expect(expectation, events)

    @staticmethod
    def _matchers(on, match, where, schema, text, bytes_, headers, meta) -> Dict[str, Any]:
        e: Dict[str, Any] = {"on": on}
        if match is not _MISSING:
            e["match"] = match
        if where is not None:
            e["where"] = [dict(w) for w in where]
        if schema is not None:
            e["schema"] = dict(schema)
        if text is not None:
            e["text"] = {"equals": text} if isinstance(text, str) else dict(text)
        if bytes_ is not None:
            e["bytes"] = dict(bytes_)
        if headers is not None:
            e["headers"] = dict(headers)
        if meta is not None:
            e["meta"] = dict(meta)
        return e

    def _expect(self, expectation: Dict[str, Any], events) -> List[Dict[str, Any]]:
        __tracebackhide__ = True
        params: Dict[str, Any] = {"scope": self.scope, "expect": expectation}
        ids = _event_ids(events)
        if ids is not None:
            params["events"] = ids
        out = self._call("expect", params)
        if out["passed"]:
            return out["observations"]
        failure = ExpectationFailed(out["text"].strip(), out["verdict"], out["observations"], expectation)
        if self.on_failure is not None:
            self.on_failure(failure)
        raise failure

    def end(self, outcome: str = "passed", reason: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """Ends the test and records its result; nothing if its engine has ended."""
        if not self._session.serves(self._generation):
            return None
        params: Dict[str, Any] = {"scope": self.scope, "outcome": outcome}
        if reason:
            params["reason"] = reason
        return self._session.call("end", params)

    def __repr__(self) -> str:
        return f"<roundtrip test {self.name!r} in run {self.run_id}>"


def evidence_json(value: Any) -> str:
    """Evidence as the report section and the JUnit property hold it."""
    return json.dumps(value, indent=2, ensure_ascii=True, sort_keys=False)
