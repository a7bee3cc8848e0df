"""The engine-protocol client: one `roundtrip serve --stdio` subprocess, JSON-RPC 2.0
over JSON lines (docs/protocol.md).

Python only ever blocks in `os.read` on the engine's stdout, so Ctrl-C and a
signal-based timeout (pytest-timeout's default) interrupt a wait at once. The
interrupted request is then cancelled in the engine (what it recorded stays recorded),
and the stream is read up to that request's answer, so the next request starts in step.
The engine runs in a session of its own: the terminal's Ctrl-C reaches Python, which
decides, rather than killing the engine's runs mid-commit. When Python dies, the
engine's stdin ends and it closes every run as interrupted.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional

from roundtrip.errors import (
    EngineError,
    HarnessError,
    SuiteError,
    UsageError,
    VersionMismatch,
)

__all__ = ["PROTOCOL_VERSION", "Engine"]

#: The protocol version this package speaks (`roundtrip::protocol::PROTOCOL_VERSION`).
PROTOCOL_VERSION = 1

#: How long a cancelled request may take to answer before the engine is killed.
CANCEL_GRACE = 10.0

#: How many of the engine log's last lines an error quotes.
LOG_LINES = 20

#: How long the engine may take to answer `initialize` (it opens its store then).
START_GRACE = 60.0

#: The longest request line the engine reads (`roundtrip::protocol::MAX_LINE`).
MAX_LINE = 16 * 1024 * 1024


def _printable(text: str) -> str:
    """`text` with control characters escaped, safe for a terminal."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)


def _error(error: Dict[str, Any], method: str) -> Exception:
    code = error.get("code")
    message = str(error.get("message", "no message"))
    kind = (error.get("data") or {}).get("kind")
    if code == -32002:
        return VersionMismatch(message)
    if code == -32800:
        # Not asked for by this client (that path re-raises its own interrupt): the
        # engine is stopping (SIGTERM, or its input closed).
        return EngineError(
            f"the engine stopped while answering `{method}` (it was told to stop, or its "
            "input closed), so the wait was cut short"
        )
    if kind == "suite":
        return SuiteError(message)
    if kind == "usage":
        return UsageError(message)
    if kind == "harness":
        return HarnessError(message)
    return EngineError(f"the engine refused `{method}` ({code}): {message}")


class Engine:
    """One engine subprocess. Requests are taken one at a time (a lock serializes
    threads), as a test makes them."""

    def __init__(
        self,
        binary: str,
        store: str,
        log: Path,
        *,
        cwd: Optional[Path] = None,
        env: Optional[Dict[str, str]] = None,
        client: str = "roundtrip-python",
    ):
        self.binary = binary
        self.store = store
        self.log = log
        self._ids = itertools.count(1)
        self._buffer = bytearray()
        self._dead: Optional[str] = None
        self._lock = threading.Lock()
        log.parent.mkdir(parents=True, exist_ok=True)
        # The store goes by the environment, not the command line: `ps` shows argv, and
        # a store URL may hold a password.
        child_env = dict(os.environ if env is None else env)
        child_env["ROUNDTRIP_STORE"] = store
        with open(log, "ab") as log_file:
            # This engine's part of the log starts here; earlier engines wrote above.
            self._log_from = log_file.tell()
            try:
                self._proc = subprocess.Popen(
                    [binary, "serve", "--stdio"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                    cwd=cwd,
                    env=child_env,
                    start_new_session=os.name == "posix",
                )
            except OSError as e:
                raise EngineError(f"the roundtrip engine {binary!r} could not be started: {e}") from e
        assert self._proc.stdout is not None and self._proc.stdin is not None
        self._out = self._proc.stdout.fileno()
        self._in = self._proc.stdin
        try:
            self.info = self.call(
                "initialize",
                {"protocol": PROTOCOL_VERSION, "client": client},
                deadline=time.monotonic() + START_GRACE,
            )
            if not isinstance(self.info, dict) or self.info.get("protocol") != PROTOCOL_VERSION:
                raise EngineError(
                    f"{binary!r} answered `initialize` with {str(self.info)[:200]!r}: it is "
                    "not a roundtrip engine of this protocol (point ROUNDTRIP_BIN at one)"
                )
        except BaseException:
            self.kill()
            raise

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._dead is None and self._proc.poll() is None

    def death(self) -> str:
        """How the engine ended, with the last lines of its log; it must have ended."""
        if self._dead is None:
            return str(self._died("idle between requests"))
        return self._dead

    def call(self, method: str, params: Dict[str, Any], deadline: Optional[float] = None) -> Any:
        """Sends one request and waits for its answer; raises the error it answers with.

        An exception raised while waiting (KeyboardInterrupt, a timeout's) cancels the
        request in the engine before it propagates; one raised while the request was
        being written kills the engine (the stream cannot be repaired).
        """
        __tracebackhide__ = True
        with self._lock:
            if self._dead is not None:
                raise EngineError(self._dead)
            request_id = next(self._ids)
            line = self._encode(
                {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
            )
            try:
                self._write(line, method)
            except EngineError:
                raise
            except BaseException:
                self.kill()
                self._dead = f"the engine was killed: writing `{method}` was interrupted"
                raise
            try:
                message = self._answer(request_id, method, deadline=deadline)
            except EngineError:
                raise
            except BaseException:
                self._cancel(request_id, method)
                raise
        if "error" in message:
            raise _error(message["error"], method)
        if "result" not in message:
            self.kill()
            raise EngineError(
                f"the engine answered `{method}` with neither a result nor an error "
                f"({str(message)[:200]!r}): {self.binary!r} is not a roundtrip engine of "
                "this protocol (point ROUNDTRIP_BIN at one)"
            )
        return message.get("result")

    @staticmethod
    def _encode(message: Dict[str, Any]) -> bytes:
        try:
            line = json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        except ValueError as e:
            raise UsageError(f"what was given cannot be sent as JSON: {e} (NaN and infinities are not JSON)") from e
        if len(line) > MAX_LINE:
            raise UsageError(
                f"the request is {len(line)} bytes, more than the engine reads in one "
                f"request ({MAX_LINE}): send less at once"
            )
        return line

    def close(self, interrupted: bool = False, timeout: float = 60.0) -> None:
        """Ends the engine: `shutdown` (its runs closed as they stand), or, when
        `interrupted`, its stdin closed (its runs recorded as interrupted). Waits for it
        to exit, and kills it after `timeout`."""
        if self._dead is None and self._proc.poll() is None:
            try:
                if not interrupted:
                    self.call("shutdown", {})
            except (EngineError, OSError):
                pass
        self._dead = self._dead or "the engine was closed"
        try:
            self._in.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def kill(self) -> None:
        """Kills the engine at once (its runs stay as the store last had them)."""
        self._dead = self._dead or "the engine was killed"
        try:
            self._proc.kill()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for pipe in (self._proc.stdin, self._proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass

    # The wire.

    def _write(self, line: bytes, method: str) -> None:
        try:
            self._in.write(line)
            self._in.flush()
        except (BrokenPipeError, OSError, ValueError) as e:
            raise self._died(f"taking `{method}`") from e

    def _line(self, deadline: Optional[float]) -> Optional[bytes]:
        """The next line, or None at the end of the stream or (with `deadline`) once it
        passes. Reads with `os.read`, so an interrupt loses nothing already read."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                ready, _, _ = select.select([self._out], [], [], left)
                if not ready:
                    return None
            chunk = os.read(self._out, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk

    def _answer(self, request_id: int, method: str, deadline: Optional[float]) -> Dict[str, Any]:
        while True:
            line = self._line(deadline)
            if line is None:
                if deadline is not None and self._proc.poll() is None:
                    raise EngineError(f"the engine did not answer `{method}` in time")
                raise self._died(f"answering `{method}`")
            try:
                message = json.loads(line)
            except ValueError as e:
                self.kill()
                raise EngineError(
                    f"the engine wrote a line that is not JSON ({e}): {line[:200]!r}; its "
                    f"log is {self.log}"
                ) from e
            if not isinstance(message, dict):
                continue
            if "id" not in message:
                # An `event` notification: progress, which this client does not show.
                continue
            if message["id"] == request_id:
                return message
            if message["id"] is None and "error" in message:
                # The engine could not read a request line: only ours is under way.
                return message
            # The late answer of a request cancelled earlier: nobody waits for it.

    def _cancel(self, request_id: int, method: str) -> None:
        """Cancels `request_id` and reads up to its answer; kills the engine if that
        fails or is itself interrupted, so that the stream is never left out of step."""
        try:
            cancel_id = next(self._ids)
            self._write(
                self._encode(
                    {"jsonrpc": "2.0", "id": cancel_id, "method": "cancel", "params": {"id": request_id}}
                ),
                "cancel",
            )
            self._answer(request_id, method, deadline=time.monotonic() + CANCEL_GRACE)
        except BaseException:
            self.kill()
            self._dead = (
                f"the engine was killed: `{method}` was interrupted and did not stop in time"
            )

    def _died(self, doing: str) -> EngineError:
        """The engine is gone: an error that says how it ended and what it last logged."""
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self._proc.returncode
        if code is not None and code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        try:
            with open(self.log, "rb") as f:
                f.seek(self._log_from)
                tail = f.read().decode(errors="replace").splitlines()[-LOG_LINES:]
        except OSError:
            tail = []
        shown = "\n".join(f"  | {_printable(line)}" for line in tail) or "  (nothing)"
        self._dead = (
            f"the roundtrip engine (pid {self._proc.pid}, {self.binary}) {how} while {doing}; "
            f"the last lines of its log ({self.log}):\n{shown}"
        )
        return EngineError(self._dead)
