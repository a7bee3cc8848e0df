"""`python -m roundtrip ARGS` runs the engine binary as `roundtrip ARGS` would."""

from __future__ import annotations

import os
import subprocess
import sys

from roundtrip._find import BinaryNotFound, find_roundtrip_bin


def main() -> int:
    try:
        binary = find_roundtrip_bin()
    except BinaryNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        # The command line's exit code for a harness that cannot run.
        return 3
    if os.name == "posix":
        os.execv(binary, [binary, *sys.argv[1:]])
    return subprocess.run([binary, *sys.argv[1:]]).returncode


if __name__ == "__main__":
    sys.exit(main())
