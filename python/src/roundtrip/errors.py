"""What can go wrong, by whose fault: the system under test (`ExpectationFailed`, an
`AssertionError`), the test or the suite (`UsageError`, `SuiteError`), the harness
(`HarnessError`, `SendFailed`) or the engine itself (`EngineError`)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

__all__ = [
    "RoundtripError",
    "EngineError",
    "VersionMismatch",
    "UsageError",
    "SuiteError",
    "HarnessError",
    "SendFailed",
    "ExpectationFailed",
    "ScenarioFailed",
]


class RoundtripError(Exception):
    """A roundtrip error that is not a verdict on the system under test."""


class EngineError(RoundtripError):
    """The engine could not be started, exited, or broke the protocol."""


class VersionMismatch(EngineError):
    """The engine speaks another protocol version than this package."""


class UsageError(RoundtripError):
    """The test asked for something the suite does not have or cannot do."""


class SuiteError(UsageError):
    """The suite file is invalid; the message holds its located diagnostics."""


class HarnessError(RoundtripError):
    """A listener, the store, the SUT or a producer's connection failed."""


class SendFailed(HarnessError):
    """The transport did not accept an event (it is recorded all the same)."""

    def __init__(self, message: str, sent: Dict[str, Any]):
        super().__init__(message)
        self.sent = sent


def _failure(verdict: Dict[str, Any]) -> Dict[str, Any]:
    """The verdict's failure (its `outcome` when `status` is `failed`), or `{}`."""
    outcome = verdict.get("outcome")
    if isinstance(outcome, dict) and outcome.get("status") == "failed":
        return outcome
    return {}


class ExpectationFailed(AssertionError):
    """An expectation did not hold. The message is the verdict with its evidence; the
    attributes carry it as data.

    - `verdict`: the verdict as the JSON report holds it;
    - `kind`: the failure's kind (`lost`, `sla-exceeded`, `duplicate`, `unexpected-arrival`, `too-few`, `reordered`, `not-sent`);
    - `near_misses`: the closest observations that did not match, each with its
      field-by-field `diffs`;
    - `observations`: the matching observations that did arrive (for `count`, say);
    - `expectation`: what was asked, as the engine was given it.
    """

    def __init__(
        self,
        text: str,
        verdict: Dict[str, Any],
        observations: List[Dict[str, Any]],
        expectation: Dict[str, Any],
    ):
        super().__init__(text)
        self.text = text
        self.verdict = verdict
        self.observations = observations
        self.expectation = expectation
        failure = _failure(verdict)
        near = (failure.get("evidence") or {}).get("near_miss")
        self.near_misses: List[Dict[str, Any]] = [near] if near else []
        self.kind: Optional[str] = failure.get("kind")


class ScenarioFailed(AssertionError):
    """A suite's scenario did not pass; the message is its verdicts with evidence."""

    def __init__(self, text: str, result: Dict[str, Any]):
        super().__init__(text)
        self.text = text
        self.result = result
