"""The seed guide's sample in pytest, against the aws-uppercase example on the emulator
(examples/aws-uppercase/README.md starts both; `test_seed_backoff.py` also needs the
seed's own listener, `python examples/python/seed_listener.py`).

The `roundtrip` fixture opens the aws-uppercase suite once per pytest process: its
listener on the destination bucket's events is subscribed before the first test puts
an object. Each test's objects are keyed by its own correlation ids, so tests may run in
parallel (`-n 4`) and never see each other's outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import roundtrip

HERE = Path(__file__).resolve().parent

#: The source bucket, as the suite names it (`UPPERCASE_SOURCE` points it at a
#: deployed system).
SOURCE = os.environ.get("UPPERCASE_SOURCE", "roundtrip-uppercase-src")


@pytest.fixture(scope="session")
def roundtrip_suite() -> roundtrip.Suite:
    return roundtrip.Suite(HERE.parent / "aws-uppercase" / "suite.yaml")
