"""The seed guide's test with the `roundtrip` fixture: the same object put, the same
uppercased output expected within the same 15 s SLA, but learnt of by push (the
listener's EventBridge rule), judged by its arrival time, tied to its own put by its
correlation id (the key), with the latency measured, and a failure that shows what
did arrive instead of "timed out"."""

from __future__ import annotations

import time

MESSAGE = "This message was created during an integration test"


def test_a_txt_object_appears_uppercased_within_15s(roundtrip, record_property):
    sent = time.monotonic()
    roundtrip.send("uploads", text=MESSAGE)
    [output] = roundtrip.expect(
        "processed",
        text=MESSAGE.upper(),
        meta={"object_key": {"regex": r"\.txt$"}},
        within="15s",
    )
    record_property("time_to_verdict_s", f"{time.monotonic() - sent:.3f}")
    assert output["text"] == MESSAGE.upper()


def test_a_csv_object_is_left_alone(roundtrip):
    # The check the original cannot make: nothing may come of it, for the whole window.
    roundtrip.send("csv_uploads", text="id,item\n1,widget\n")
    roundtrip.expect_absent("processed", within="5s")


def test_each_of_ten_objects_is_processed_exactly_once(roundtrip):
    sent = [roundtrip.send("uploads", text=f"object {i}") for i in range(10)]
    outputs = roundtrip.expect("processed", count=1, within="5s", grace="1s")
    assert sorted(o["text"] for o in outputs) == sorted(f"OBJECT {i}" for i in range(10))
    assert {o["correlation_id"] for o in outputs} == {s.correlation_id for s in sent}
