"""Side by side: the seed sample's pytest test and the roundtrip suite for the same case.

Both run against the same emulator and the same processing service (the `uppercase`
example). Measured in one run, per tool:
- wall time of one test run (process start to exit), over --rounds sequential runs;
- time to verdict: from the processed object's creation (the service logs when it wrote
  each output) to the moment the test knows (pytest: the assertion; roundtrip: the PASS
  line of the scenario);
- --concurrent runs at once: how many pass, wall time of the batch, time to verdict.

Prerequisites: `scripts/services.sh start`, `eval "$(scripts/services.sh aws-env)"`,
`pip install -r bench/aws-uppercase/requirements.txt`, and release builds:
    cargo build --release -p roundtrip-cli --features aws,dynamodb \\
      -p roundtrip-example-aws-uppercase --features roundtrip-example-aws-uppercase/aws
Then:
    python3 bench/aws-uppercase/bench.py --rounds 5 --concurrent 50
"""

import argparse
import atexit
import concurrent.futures as cf
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def now_ms() -> float:
    return time.time() * 1000


class ServiceLog:
    """The uppercase service's output: when each destination object was written."""

    LINE = re.compile(r"^wrote s3://[^/]+/(\S+) at (\d+)$")

    def __init__(self, path: Path):
        self.path = path

    def written(self) -> dict:
        out = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            m = self.LINE.match(line.strip())
            if m:
                out[m.group(1)] = int(m.group(2))
        return out


def start(cmd, log: Path, ready: str, env) -> subprocess.Popen:
    f = open(log, "w", encoding="utf-8")
    proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    atexit.register(proc.kill)
    deadline = time.time() + 120
    while time.time() < deadline:
        if ready in log.read_text(encoding="utf-8"):
            return proc
        if proc.poll() is not None:
            sys.exit(f"{cmd[0]} exited early:\n{log.read_text()}")
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"{cmd[0]} was not ready within 120 s")


def run_seed(env, verdicts: Path) -> dict:
    env = dict(env, SEED_VERDICTS=str(verdicts))
    started = now_ms()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "test_seed_style.py")],
        env=env, cwd=HERE, capture_output=True, text=True,
    )
    return {"wall_ms": now_ms() - started, "passed": proc.returncode == 0, "output": proc.stdout[-400:]}


def run_roundtrip(env, binary: Path, store: str) -> dict:
    started = now_ms()
    proc = subprocess.Popen(
        [str(binary), "run", str(HERE / "roundtrip.yaml"), "--store", store],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
    )
    run_id, verdict_ms, lines = None, None, []
    for line in proc.stdout:
        at = now_ms()
        lines.append(line.rstrip())
        m = re.search(r"· run ([0-9a-f-]{36}) ·", line)
        if m:
            run_id = m.group(1)
        if line.startswith(("PASS", "FAIL", "ERROR")) and verdict_ms is None:
            verdict_ms = at
    proc.wait()
    return {
        "wall_ms": now_ms() - started,
        "passed": proc.returncode == 0,
        "run_id": run_id,
        "verdict_ms": verdict_ms,
        "output": "\n".join(lines[-6:]),
    }


def seed_verdicts(path: Path) -> dict:
    out = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            key, at, outcome = line.split()
            out[key] = (int(at), outcome)
    return out


def summary(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return "n/a"
    def pct(p):
        return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]
    return f"p50 {pct(50) / 1000:.2f} s · p90 {pct(90) / 1000:.2f} s · max {values[-1] / 1000:.2f} s (n={len(values)})"


def measure(label, runs, binary, env, concurrency, store):
    """Runs `runs` tests of each tool, `concurrency` at a time; returns per-tool results."""
    service = ServiceLog(LOGS / "uppercase.log")
    results = {}
    for tool in ("seed pytest", "roundtrip"):
        verdicts = Path(tempfile.mkstemp(prefix="seed-verdicts-")[1])
        verdicts.write_text("")
        started = now_ms()
        with cf.ThreadPoolExecutor(concurrency) as pool:
            if tool == "seed pytest":
                outcomes = list(pool.map(lambda _: run_seed(env, verdicts), range(runs)))
            else:
                outcomes = list(pool.map(lambda _: run_roundtrip(env, binary, store), range(runs)))
        batch_ms = now_ms() - started
        time.sleep(0.5)  # the service log is flushed per line; let the last lines land
        written = service.written()
        ttv = []
        if tool == "seed pytest":
            for key, (at, outcome) in seed_verdicts(verdicts).items():
                if outcome == "pass" and key in written:
                    ttv.append(at - written[key])
        else:
            for o in outcomes:
                made = [t for k, t in written.items() if o["run_id"] and k.startswith(o["run_id"] + "/")]
                if o["passed"] and made and o["verdict_ms"]:
                    ttv.append(o["verdict_ms"] - made[0])
        failed = [o for o in outcomes if not o["passed"]]
        results[tool] = {
            "runs": runs,
            "passed": runs - len(failed),
            "batch_wall_ms": batch_ms,
            "wall": summary([o["wall_ms"] for o in outcomes]),
            "time_to_verdict": summary(ttv),
            "first_failure": failed[0]["output"] if failed else None,
        }
        print(f"[{label}] {tool}: {json.dumps(results[tool])}", flush=True)
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--roundtrip", default=str(ROOT / "target/release/roundtrip"))
    parser.add_argument("--uppercase", default=str(ROOT / "target/release/uppercase"))
    parser.add_argument("--store", default="dynamodb://roundtrip-bench?ttl=1d")
    parser.add_argument("--out", default=str(ROOT / "target/bench/aws-uppercase.json"))
    args = parser.parse_args()
    if "AWS_ENDPOINT_URL" not in os.environ:
        sys.exit('set the emulator\'s environment first: eval "$(scripts/services.sh aws-env)"')
    env = dict(os.environ)

    global LOGS
    LOGS = Path(tempfile.mkdtemp(prefix="aws-uppercase-bench-"))
    service = start([args.uppercase, "--setup", "--workers", "8"], LOGS / "uppercase.log", "uppercase ready", env)
    listener = start([sys.executable, str(ROOT / "examples" / "python" / "seed_listener.py")], LOGS / "seed-listener.log", "seed listener ready", env)
    try:
        single = measure("one at a time", args.rounds, Path(args.roundtrip), env, 1, args.store)
        concurrent = measure(f"{args.concurrent} at once", args.concurrent, Path(args.roundtrip), env, args.concurrent, args.store)
    finally:
        service.kill()
        listener.kill()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"single": single, "concurrent": concurrent}, indent=2))
    print(f"\nwritten to {args.out}; logs in {LOGS}")


LOGS = None

if __name__ == "__main__":
    main()
