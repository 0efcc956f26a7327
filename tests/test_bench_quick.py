"""scripts/bench --quick end to end: every comparison of the benchmark runs
and lands in results.json with numbers, with table.md and plot.png beside it.
(The real benchmark never runs in the test suite; this keeps it working.)"""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def numbers(s):
    return [s["median"], s["min"], s["max"]]


def check_stats(s, what):
    assert s["n"] >= 1, what
    for v in numbers(s):
        assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, (what, s)
    assert s["min"] <= s["median"] <= s["max"], (what, s)


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
@pytest.mark.skipif(not shutil.which("gnuplot"), reason="needs gnuplot")
def test_bench_quick(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench"), "--quick",
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["quick"] is True
    assert r["machine"]["nproc"] >= 1 and r["machine"]["kernel"]

    # 1. key write and read: bookmarkfs against the no-FUSE baseline, plus
    # the FUSE floor and s3fs wherever they are installed.
    for mode in ("write", "read"):
        targets = r["keys"][mode]
        assert {"bookmarkfs", "tmpfs"} <= set(targets)
        if shutil.which("s3fs"):
            assert "s3fs" in targets
        for name, s in targets.items():
            check_stats(s, f"keys {mode} {name}")
    # 2. commit: three implementations at every size.
    assert r["commit"]["sizes"]
    for n, impls in r["commit"]["sizes"].items():
        assert set(impls) == {"bookmarkfs", "raw_put", "standin_boto3"}
        for name, s in impls.items():
            check_stats(s, f"commit {n} {name}")
        assert int(r["commit"]["bytes"][n]) > 2
    # 3. get_or_create.
    assert r["goc"]["sizes"]
    for n, impls in r["goc"]["sizes"].items():
        assert set(impls) == {"bookmarkfs", "boto3_list_get"}
        for name, s in impls.items():
            check_stats(s, f"goc {n} {name}")
    # 4. scale.
    s = r["scale"]
    for k in ("rss_mb_mounted", "rss_mb_loaded", "hwm_mb", "load_state_json_ms",
              "ls_root_cold_ms"):
        assert s[k] > 0, k
    for k in ("ls_job_ms", "cat_state_json_ms", "commit_ms", "ls_root_ms"):
        check_stats(s[k], k)
    # 5. parallel writers: 1, 2 and 4 processes.
    assert set(r["parallel"]["writers"]) == {"1", "2", "4"}
    for p, targets in r["parallel"]["writers"].items():
        check_stats(targets["bookmarkfs"], f"parallel {p}")
    # 6. history: both stores, every size, each way measured.
    h = r["history"]
    assert {"dir", "s3"} <= set(h["stores"])
    for kind, sizes in h["stores"].items():
        assert list(sizes) == h["sizes"]
        for n, impls in sizes.items():
            for name in ("fresh_access", "fresh_ls", "access", "ls", "standin"):
                check_stats(impls[name], f"history {kind} {n} {name}")
            assert impls["index"]["full_listings"] == 2, impls["index"]
    # 7. a commit with job leases on and off, on RGW.
    for mode in ("on", "off"):
        check_stats(r["lease"][mode], f"lease {mode}")
    assert r["lease"]["ratio"] > 0
    # Goals are evaluated (the sizes of --quick leave some unmeasured).
    names = [g["goal"] for g in r["goals"]]
    assert len(names) == 11 + (2 if "rgw" in h["stores"] else 0), names  # 1: leases

    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "table.md").read_text()
    assert "Commit" in table and "get_or_create" in table and "Goals" in table
    # Nothing of the run is left mounted.
    mounts = Path("/proc/mounts").read_text()
    assert "bookmarkfs-bench-" not in mounts
