"""The pytest plugin against the real engine: collection, ids, selection, xdist,
failures and their evidence, JUnit, interruption, a crashed engine, a protocol
mismatch."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import FIXTURE_CONFTEST, Project, store_runs

HAND = """\
def test_sends_and_expects(roundtrip):
    sent = roundtrip.send("box", {"item": "cup"})
    [obs] = roundtrip.expect("box", match={"item": "cup"}, within="5s")
    assert obs["json"] == {"item": "cup"}
    assert obs["correlation_id"] == sent.correlation_id

def test_nothing_else_arrives(roundtrip):
    roundtrip.send("box", {"item": "plate"})
    roundtrip.expect_absent("box", match={"item": "bowl"}, within="300ms")

def test_a_miss_shows_the_near_miss(roundtrip):
    roundtrip.send("box", {"item": "cup", "qty": 2})
    roundtrip.expect("box", match={"item": "mug"}, within=0.3)
"""


def outcomes(result) -> dict:
    """The counts on pytest's summary line, e.g. {'passed': 3, 'failed': 1}."""
    line = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|error|errors|deselected|skipped)", line)}


def test_a_suite_file_is_collected_as_one_test_per_scenario_with_stable_ids(project: Project):
    result = project.pytest("--collect-only", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    assert ids == [
        "loop.roundtrip.yaml::one event comes back",
        "loop.roundtrip.yaml::a second event comes back",
        "loop.roundtrip.yaml::the wrong value never comes",
    ]
    again = project.pytest("--collect-only", "-q")
    assert [line for line in again.stdout.splitlines() if "::" in line] == ids


def test_scenarios_run_and_fail_with_their_evidence_in_the_report_and_junit(project: Project):
    result = project.pytest("-q", "--junitxml=junit.xml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert outcomes(result) == {"passed": 2, "failed": 1}, result.stdout
    out = result.stdout
    # The failure: the expectation, its deadline, what was seen, the near-miss's diff.
    assert "✗ at least 1 observation matching" in out and "within 300ms of each send [lost]" in out, out
    assert "closest near-miss" in out and "$.item: expected \"mug\", got \"cup\"" in out, out
    assert "Captured roundtrip evidence call" in out, out
    # No traceback into the plugin: the failure is the verdict.
    assert "plugin.py" not in out, out

    suite = ET.parse(project.root / "junit.xml").getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"one event comes back", "a second event comes back", "the wrong value never comes"}
    failure = cases["the wrong value never comes"].find("failure")
    assert failure is not None
    assert "closest near-miss" in (failure.text or "") + (failure.get("message") or "")
    props = {p.get("name"): p.get("value") for p in cases["the wrong value never comes"].iter("property")}
    assert '"kind": "lost"' in props["roundtrip_evidence"], props
    assert re.fullmatch(r"[0-9a-f-]{36}", props["roundtrip_run"]), props
    assert props["roundtrip_store"].endswith("pytest-main.sqlite"), props
    # One run for the file, in the store, with its three scenarios.
    [(run, status, names)] = store_runs(project.root / ".roundtrip" / "pytest-main.sqlite")
    assert run == props["roundtrip_run"]
    assert status == "failed"
    assert names == ["one event comes back", "a second event comes back", "the wrong value never comes"]


def test_k_selects_scenarios_by_name(project: Project):
    result = project.pytest("-q", "-k", "second")
    assert result.returncode == 0, result.stdout + result.stderr
    assert outcomes(result) == {"passed": 1, "deselected": 2}, result.stdout


def test_m_selects_scenarios_by_their_suite_tags_even_with_strict_markers(project: Project):
    result = project.pytest("-q", "-m", "smoke", "--strict-markers")
    assert result.returncode == 0, result.stdout + result.stderr
    assert outcomes(result) == {"passed": 1, "deselected": 2}, result.stdout
    assert "PytestUnknownMarkWarning" not in result.stdout, result.stdout


def test_lf_reruns_only_the_scenario_that_failed(project: Project):
    first = project.pytest("-q")
    assert outcomes(first) == {"passed": 2, "failed": 1}, first.stdout
    again = project.pytest("-q", "--lf")
    # pytest may or may not count the others as deselected; only the failure runs.
    assert outcomes(again).get("failed") == 1 and "passed" not in outcomes(again), again.stdout
    assert "the wrong value never comes" in again.stdout, again.stdout


def test_x_stops_at_the_first_failure(project: Project):
    project.write(
        "loop.roundtrip.yaml",
        """\
        name: loop
        channels:
          box: { dir: { path: box, suffix: .json } }
        scenarios:
          - name: fails first
            send: [ { to: box, body: { n: 1 } } ]
            expect: [ { on: box, match: { n: 2 }, within: 200ms } ]
          - name: never runs
            send: [ { to: box, body: { n: 1 } } ]
            expect: [ { on: box, match: { n: 1 }, within: 5s } ]
        """,
    )
    result = project.pytest("-q", "-x")
    assert result.returncode == 1
    assert outcomes(result) == {"failed": 1}, result.stdout


def test_under_xdist_each_worker_has_its_engine_and_store_and_the_ids_hold(project: Project):
    project.write("conftest.py", FIXTURE_CONFTEST)
    project.write("test_hand.py", HAND)
    result = project.pytest("-q", "-n", "2", "--junitxml=junit.xml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert outcomes(result) == {"passed": 4, "failed": 2}, result.stdout
    stores = sorted(p.name for p in (project.root / ".roundtrip").glob("pytest-*.sqlite"))
    assert stores == ["pytest-gw0.sqlite", "pytest-gw1.sqlite"], stores
    recorded = []
    for store in stores:
        for _, _, names in store_runs(project.root / ".roundtrip" / store):
            recorded.extend(names)
    # Every test ran exactly once, in one worker's run, under its node id or name.
    assert sorted(recorded) == sorted(
        [
            "one event comes back",
            "a second event comes back",
            "the wrong value never comes",
            "test_hand.py::test_sends_and_expects",
            "test_hand.py::test_nothing_else_arrives",
            "test_hand.py::test_a_miss_shows_the_near_miss",
        ]
    ), recorded


def test_the_fixture_sends_expects_and_fails_with_the_near_miss(project: Project):
    project.write("conftest.py", FIXTURE_CONFTEST)
    project.write("test_hand.py", HAND)
    project.write(
        "test_api.py",
        """\
        import pytest
        import roundtrip as rt

        def test_the_failure_carries_its_evidence(roundtrip):
            roundtrip.send("box", {"item": "cup", "qty": 2})
            with pytest.raises(rt.ExpectationFailed) as failed:
                roundtrip.expect("box", match={"item": "mug"}, within="200ms")
            e = failed.value
            assert isinstance(e, AssertionError)
            assert e.kind == "lost"
            [near] = e.near_misses
            assert near["diffs"] == [{"path": "$.item", "expected": '"mug"', "actual": '"cup"'}]
            assert e.observations == []

        def test_expect_names_the_events_it_judges(roundtrip):
            first = roundtrip.send("box", {"n": 1})
            roundtrip.send("box", {"n": 2})
            [obs] = roundtrip.expect("box", match={"n": 1}, within="5s", events=[first])
            assert obs["correlation_id"] == first.correlation_id
            both = roundtrip.expect("box", within="5s")
            assert sorted(o["json"]["n"] for o in both) == [1, 2]

        def test_text_and_absence(roundtrip):
            roundtrip.send("box", text="hello")
            [obs] = roundtrip.expect("box", text="hello", within="5s")
            assert obs["text"] == "hello" and "json" not in obs
            with pytest.raises(rt.ExpectationFailed) as failed:
                roundtrip.expect_absent("box", text="hello", within="200ms")
            assert failed.value.kind == "unexpected-arrival"

        def test_usage_errors_say_what_to_do(roundtrip):
            with pytest.raises(rt.UsageError, match="has sent no event"):
                roundtrip.expect("box", within="1s")
            with pytest.raises(rt.UsageError, match="no channel `boxx`.*did you mean `box`"):
                roundtrip.send("boxx", {})
            with pytest.raises(rt.UsageError, match="one of `body`, `text`"):
                roundtrip.send("box", {}, text="x")
        """,
    )
    result = project.pytest("-q", "test_hand.py", "test_api.py")
    assert result.returncode == 1, result.stdout + result.stderr
    assert outcomes(result) == {"passed": 6, "failed": 1}, result.stdout
    out = result.stdout
    assert "test_a_miss_shows_the_near_miss" in out
    assert "ExpectationFailed" in out and "$.item: expected \"mug\", got \"cup\"" in out, out
    # The traceback ends at the test's own line, not inside the client.
    assert "test_hand.py:13" in out, out
    assert "_api.py" not in out and "client.py" not in out, out
    [(_, status, names)] = store_runs(project.root / ".roundtrip" / "pytest-main.sqlite")
    assert status == "failed"
    assert "test_hand.py::test_a_miss_shows_the_near_miss" in names


def test_a_test_that_fails_its_own_assertion_is_recorded_as_failed(project: Project):
    project.write("conftest.py", FIXTURE_CONFTEST)
    project.write(
        "test_own.py",
        """\
        def test_own_assertion(roundtrip):
            roundtrip.send("box", {"n": 1})
            roundtrip.expect("box", within="5s")
            assert 1 == 2, "a check of the test's own"
        """,
    )
    result = project.pytest("-q", "test_own.py")
    assert result.returncode == 1
    store = project.root / ".roundtrip" / "pytest-main.sqlite"
    [(run, status, names)] = store_runs(store)
    assert status == "failed" and names == ["test_own.py::test_own_assertion"]


def test_an_invalid_suite_is_a_collection_error_with_its_diagnostics(project: Project):
    project.write("bad.roundtrip.yaml", "name: bad\nchannels: {}\nscenarios:\n  - name: a\n    sendd: []\n")
    result = project.pytest("-q", "bad.roundtrip.yaml")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "bad.roundtrip.yaml:5:" in result.stdout and "sendd" in result.stdout, result.stdout
    assert "Traceback" not in result.stdout, result.stdout


def test_a_missing_engine_is_a_clear_error(project: Project):
    result = project.pytest("-q", env={"ROUNDTRIP_BIN": str(project.root / "nope")})
    assert result.returncode != 0
    assert "ROUNDTRIP_BIN" in result.stdout and "not an executable file" in result.stdout, result.stdout


def test_a_protocol_version_mismatch_is_refused_with_both_versions(project: Project):
    project.write(
        "conftest.py",
        """\
        import roundtrip.client
        roundtrip.client.PROTOCOL_VERSION = 99
        """,
    )
    result = project.pytest("-q", "-k", "second")
    assert result.returncode != 0
    out = result.stdout
    assert "VersionMismatch" in out or "protocol version 99" in out, out
    assert "speaks version 1" in out and "ROUNDTRIP_BIN" in out, out


def test_a_crashed_engine_fails_the_test_clearly_and_the_next_test_gets_a_new_one(project: Project):
    project.write("conftest.py", FIXTURE_CONFTEST)
    project.write(
        "test_crash.py",
        """\
        import os, signal

        def test_engine_dies_during_a_wait(roundtrip):
            roundtrip.send("box", {"n": 1})
            os.kill(roundtrip.engine_pid, signal.SIGKILL)
            roundtrip.expect("box", match={"never": True}, within="60s")

        def test_the_next_test_has_an_engine(roundtrip):
            roundtrip.send("box", {"n": 2})
            roundtrip.expect("box", match={"n": 2}, within="5s")
        """,
    )
    started = time.monotonic()
    result = project.pytest("-q", "test_crash.py", timeout=120)
    took = time.monotonic() - started
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout + result.stderr
    out = result.stdout
    assert "EngineError" in out and "was killed by SIGKILL" in out, out
    assert "the last lines of its log" in out, out
    # Not a 60 s wait: the dead engine is noticed at once.
    assert took < 60, took


def test_ctrl_c_during_a_wait_stops_the_session_and_records_the_run_as_interrupted(project: Project):
    project.write("conftest.py", FIXTURE_CONFTEST)
    project.write(
        "test_wait.py",
        """\
        import os
        def test_waits_a_minute(roundtrip, request):
            roundtrip.send("box", {"n": 1})
            print(f"WAITING engine={roundtrip.engine_pid}", flush=True)
            roundtrip.expect("box", match={"never": True}, within="60s")
        """,
    )
    proc = project.spawn("-q", "-s", "test_wait.py")
    assert proc.stdout is not None
    engine_pid = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        m = re.search(r"WAITING engine=(\d+)", line)
        if m:
            engine_pid = int(m.group(1))
            break
    assert engine_pid is not None, "".join(lines)
    interrupted_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    took = time.monotonic() - interrupted_at
    assert proc.returncode == 2, "".join(lines) + rest
    assert "KeyboardInterrupt" in rest, rest
    assert took < 30, took
    # The engine is gone, and its run is recorded as interrupted.
    with pytest.raises(ProcessLookupError):
        os.kill(engine_pid, 0)
    [(_, status, names)] = store_runs(project.root / ".roundtrip" / "pytest-main.sqlite")
    assert status == "interrupted", status
    assert names == ["test_wait.py::test_waits_a_minute"]


def test_pytest_timeout_interrupts_a_wait_and_the_session_goes_on(project: Project):
    project.write("conftest.py", FIXTURE_CONFTEST)
    project.write(
        "test_timeout.py",
        """\
        import pytest

        @pytest.mark.timeout(2, method="signal")
        def test_times_out(roundtrip):
            roundtrip.send("box", {"n": 1})
            roundtrip.expect("box", match={"never": True}, within="60s")

        def test_after_it(roundtrip):
            roundtrip.send("box", {"n": 2})
            roundtrip.expect("box", match={"n": 2}, within="5s")
        """,
    )
    started = time.monotonic()
    result = project.pytest("-q", "test_timeout.py")
    took = time.monotonic() - started
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout + result.stderr
    assert "Timeout" in result.stdout, result.stdout
    assert took < 50, took
    [(_, status, names)] = store_runs(project.root / ".roundtrip" / "pytest-main.sqlite")
    assert names == ["test_timeout.py::test_times_out", "test_timeout.py::test_after_it"]
    assert status == "failed"


def test_the_fixture_without_a_suite_says_how_to_give_one(project: Project):
    project.write("test_none.py", "def test_x(roundtrip):\n    pass\n")
    result = project.pytest("-q", "test_none.py")
    assert result.returncode == 1
    assert "roundtrip_suite" in result.stdout and "conftest.py" in result.stdout, result.stdout


def test_the_store_option_takes_the_worker_id(project: Project, tmp_path: Path):
    store = tmp_path / "elsewhere" / "s-{worker}.sqlite"
    store.parent.mkdir()
    result = project.pytest("-q", "-k", "second", f"--roundtrip-store=sqlite:{store}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "elsewhere" / "s-main.sqlite").is_file()


def test_what_cannot_be_sent_is_a_usage_error_before_anything_is_sent(project: Project):
    project.write("conftest.py", FIXTURE_CONFTEST)
    project.write(
        "test_bad.py",
        """\
        import pytest
        import roundtrip as rt

        def test_nan_and_a_huge_body(roundtrip):
            with pytest.raises(rt.UsageError, match="NaN"):
                roundtrip.send("box", {"x": float("nan")})
            with pytest.raises(rt.UsageError, match="more than the engine reads"):
                roundtrip.send("box", text="x" * (17 * 1024 * 1024))
            with pytest.raises(ValueError, match="whole milliseconds"):
                roundtrip.expect("box", within=0.0001)
            # The engine is still in step: the test goes on.
            sent = roundtrip.send("box", {"x": 1})
            [obs] = roundtrip.expect("box", within="5s", events=sent)
            assert obs["json"] == {"x": 1}
        """,
    )
    result = project.pytest("-q", "test_bad.py", timeout=120)
    assert outcomes(result) == {"passed": 1}, result.stdout + result.stderr


def test_a_tag_that_is_another_plugin_s_mark_is_refused_at_collection(project: Project):
    project.write(
        "tagged.roundtrip.yaml",
        """\
        name: tagged
        channels:
          box: { dir: { path: box } }
        scenarios:
          - name: tagged timeout
            tags: [timeout]
            send: [ { to: box } ]
            expect: [ { on: box, within: 1s } ]
        """,
    )
    result = project.pytest("-q", "tagged.roundtrip.yaml")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the tag `timeout` is also a pytest mark" in result.stdout, result.stdout
    assert "INTERNALERROR" not in result.stdout + result.stderr


def test_a_program_that_is_not_an_engine_is_refused_not_waited_on(project: Project, tmp_path: Path):
    echo = tmp_path / "echo-engine"
    echo.write_text("#!/bin/sh\nexec cat\n")
    echo.chmod(0o755)
    result = project.pytest("-q", env={"ROUNDTRIP_BIN": str(echo)}, timeout=120)
    assert result.returncode != 0
    assert "not a roundtrip engine" in result.stdout, result.stdout


def test_a_relative_engine_path_is_taken_from_where_pytest_was_started(project: Project):
    import shutil

    import roundtrip

    binary = roundtrip.find_roundtrip_bin()
    (project.root / "bin").mkdir()
    shutil.copy(binary, project.root / "bin" / "engine")
    sub = project.root / "sub"
    sub.mkdir()
    (sub / "loop.roundtrip.yaml").write_text((project.root / "loop.roundtrip.yaml").read_text())
    done = subprocess.run(
        project.command("-q", "-k", "second", f"--rootdir={sub}", "sub/loop.roundtrip.yaml"),
        cwd=project.root,
        env=project.env({"ROUNDTRIP_BIN": "bin/engine"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_threads_of_one_test_share_the_fixture(project: Project):
    project.write("conftest.py", FIXTURE_CONFTEST)
    project.write(
        "test_threads.py",
        """\
        from concurrent.futures import ThreadPoolExecutor

        def test_sends_from_four_threads(roundtrip):
            with ThreadPoolExecutor(4) as pool:
                sent = list(pool.map(lambda i: roundtrip.send("box", {"n": i}), range(20)))
            assert len({s.correlation_id for s in sent}) == 20
            got = roundtrip.expect("box", within="10s")
            assert sorted(o["json"]["n"] for o in got) == list(range(20))
        """,
    )
    result = project.pytest("-q", "test_threads.py", timeout=120)
    assert outcomes(result) == {"passed": 1}, result.stdout + result.stderr
