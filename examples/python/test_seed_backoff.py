"""The seed guide's test, in its own style: put an object, then poll the listener's
DynamoDB results table with a Fibonacci back-off for at most 15 s
(`backoff.on_exception(backoff.fibo, KeyError, max_time=15)`), one fixed key for the
whole session, a bare `except` that turns any failure into one message.

The seed's listener is a Lambda function that copies each object of the destination
bucket into the results table; here it is `seed_listener.py`, a process doing the same
through the bucket's SNS topic (the emulator runs no Lambda). Start it beside the
uppercase service: `python examples/python/seed_listener.py`.

Kept beside `test_seed_roundtrip.py` to be compared with it: what the original cannot
tell (late from lost, what arrived instead), measure (the SLA) or check (that nothing
arrives), and how long it takes to know (bench/python-seed.py).
"""

from __future__ import annotations

import os
import time
import uuid

import backoff
import boto3
import pytest

from conftest import SOURCE

TABLE = os.environ.get("SEED_TABLE", "seed-results")
MESSAGE = "This message was created during an integration test"


class SingletonFilename:
    """One key for the whole session, as in the original (two tests of a session, or
    two xdist workers, would share it)."""

    name = f"{uuid.uuid4()}.txt"


@pytest.fixture(scope="module")
def results():
    return boto3.resource("dynamodb").Table(TABLE)


def poll_for_result(results, key: str):
    @backoff.on_exception(backoff.fibo, KeyError, max_time=15)
    def poll():
        # KeyError until the listener has written the item.
        return results.get_item(Key={"id": key})["Item"]

    return poll()


def test_async_transform(results, record_property):
    key = SingletonFilename.name
    sent = time.monotonic()
    boto3.client("s3").put_object(Bucket=SOURCE, Key=key, Body=MESSAGE.encode())
    try:
        item = poll_for_result(results, key)
    except:  # noqa: E722 (the original's bare except)
        assert False, "DynamoDB poller timed out."
    record_property("time_to_verdict_s", f"{time.monotonic() - sent:.3f}")
    assert item["message"] == MESSAGE.upper()
