"""roundtrip for Python: end-to-end tests of asynchronous, event-driven systems.

The engine is the `roundtrip` binary shipped in this package; this package drives it
over its protocol (docs/protocol.md). In pytest, suite files named `*.roundtrip.yaml`
are collected as tests, and the `roundtrip` fixture gives a hand-written test `send`,
`expect` and `expect_absent` (docs/python.md).
"""

__version__ = "0.1.0"

from roundtrip._api import Duration, Sent, Session, Suite, Test  # noqa: E402
from roundtrip._find import BinaryNotFound, find_roundtrip_bin  # noqa: E402
from roundtrip.client import PROTOCOL_VERSION, Engine  # noqa: E402
from roundtrip.errors import (  # noqa: E402
    EngineError,
    ExpectationFailed,
    HarnessError,
    RoundtripError,
    ScenarioFailed,
    SendFailed,
    SuiteError,
    UsageError,
    VersionMismatch,
)

__all__ = [
    "PROTOCOL_VERSION",
    "BinaryNotFound",
    "Duration",
    "Engine",
    "EngineError",
    "ExpectationFailed",
    "HarnessError",
    "RoundtripError",
    "ScenarioFailed",
    "SendFailed",
    "Sent",
    "Session",
    "Suite",
    "SuiteError",
    "Test",
    "UsageError",
    "VersionMismatch",
    "find_roundtrip_bin",
]
