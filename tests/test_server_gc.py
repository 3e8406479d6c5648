"""The bastion tunes the cyclic garbage collector once it has started (bastion.server.tune_gc)."""

from __future__ import annotations

import subprocess
import sys


def test_tune_gc_freezes_what_startup_built_and_collects_less_often() -> None:
    # In a child interpreter, so that this test process's collector is left as it was.
    code = (
        "import gc\n"
        "from bastion.server import GC_YOUNG_THRESHOLD, tune_gc\n"
        "before = gc.get_threshold()\n"
        "assert gc.get_freeze_count() == 0\n"
        "tune_gc()\n"
        "after = gc.get_threshold()\n"
        "assert after == (GC_YOUNG_THRESHOLD, *before[1:]), (before, after)\n"
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
