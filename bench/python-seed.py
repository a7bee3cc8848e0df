#!/usr/bin/env python3
"""The seed guide's pytest test (a Fibonacci back-off poller) beside the same test with
the roundtrip fixture, measured in one pytest run, several times.

Measured, for each test:
- wall time: pytest's own duration of the test, as the JUnit report gives it (setup,
  call and teardown; the fixture's first test also opens the run: its listener's
  EventBridge rule and queue);
- time to verdict: from just before the object is put to the moment the test knows
  the output is there (each test records it as the `time_to_verdict_s` property).

Needs the emulator and the uppercase service running (examples/aws-uppercase/README.md),
the environment of `scripts/services.sh aws-env`, and the roundtrip package importable
(installed, or `PYTHONPATH=python/src` with `ROUNDTRIP_BIN`).

    bench/python-seed.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = {
    "seed (backoff.fibo, max_time=15)": "test_seed_backoff.py::test_async_transform",
    "roundtrip fixture": "test_seed_roundtrip.py::test_a_txt_object_appears_uppercased_within_15s",
}


def one_run(junit: Path) -> dict:
    ids = [f"examples/python/{t}" for t in TESTS.values()]
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *ids]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the run failed:\n{done.stdout}\n{done.stderr}")
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        out[case.get("name")] = (float(case.get("time")), float(props["time_to_verdict_s"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    samples = {label: ([], []) for label in TESTS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            got = one_run(Path(tmp) / f"junit-{i}.xml")
            for label, test in TESTS.items():
                wall, verdict = got[test.split("::")[1]]
                samples[label][0].append(wall)
                samples[label][1].append(verdict)
    print(f"{args.runs} pytest runs, both tests in each; python {sys.version.split()[0]}")
    print("| test | wall time median (min–max) | time to verdict median (min–max) |")
    print("| --- | --- | --- |")
    for label, (walls, verdicts) in samples.items():
        def cell(xs):
            return f"{statistics.median(xs) * 1000:.0f} ms ({min(xs) * 1000:.0f}–{max(xs) * 1000:.0f})"
        print(f"| {label} | {cell(walls)} | {cell(verdicts)} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
