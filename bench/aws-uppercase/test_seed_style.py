"""The seed sample's test, written the way the seed writes it.

Put a uniquely named `.txt` object into the source bucket, then poll the listener's
DynamoDB results table with Fibonacci backoff (randomly jittered waits of up to 1, 1, 2,
3, 5, 8 s) until the item appears or the 15 s SLA passes. One key per session. Every
failure, whatever its cause, surfaces as "timed out".

The benchmark reads one line per test from $SEED_VERDICTS: the key and when the verdict
was reached (Unix ms).
"""

import os
import random
import time
import uuid

import boto3
import pytest

SLA_SECONDS = 15
SOURCE = os.environ.get("UPPERCASE_SOURCE", "roundtrip-uppercase-src")
TABLE = os.environ.get("SEED_TABLE", "seed-results")


def fibonacci():
    a, b = 1, 1
    while True:
        yield a
        a, b = b, a + b


@pytest.fixture(scope="session")
def key():
    return f"{uuid.uuid4()}.txt"


def test_object_is_uppercased_within_sla(key):
    s3 = boto3.client("s3")
    dynamodb = boto3.client("dynamodb")
    s3.put_object(Bucket=SOURCE, Key=key, Body=b"This is a test")

    deadline = time.monotonic() + SLA_SECONDS
    item = None
    for ceiling in fibonacci():
        item = dynamodb.get_item(TableName=TABLE, Key={"id": {"S": key}}).get("Item")
        if item is not None or time.monotonic() >= deadline:
            break
        # Full jitter: a random wait of up to the Fibonacci ceiling, never past the SLA.
        time.sleep(min(random.uniform(0, ceiling), max(0.0, deadline - time.monotonic())))

    verdicts = os.environ.get("SEED_VERDICTS")
    if verdicts:
        with open(verdicts, "a", encoding="utf-8") as f:
            f.write(f"{key} {int(time.time() * 1000)} {'pass' if item else 'fail'}\n")
    assert item is not None, "timed out"
    assert item["message"]["S"] == "THIS IS A TEST"
