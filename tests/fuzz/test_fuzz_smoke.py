"""The libFuzzer targets of tests/fuzz: every seed of the corpus and every
saved crash (tests/fuzz/regressions/TARGET) is replayed once through its
target, then each target fuzzes for a few seconds (scripts/fuzz --smoke).

The targets need clang; without it these tests skip (scripts/test installs
it). The build directory is build-fuzz, or BOOKMARKFS_FUZZ_BUILD."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FUZZ = REPO / "tests" / "fuzz"
SCRIPT = REPO / "scripts" / "fuzz"
TARGETS = [
    "fuzz_list_xml",
    "fuzz_error_xml",
    "fuzz_key_value",
    "fuzz_from_bytes",
    "fuzz_sigv4_encode",
]
# Generous guards against a hung process; nothing here measures time.
BUILD_GUARD_S = 900
RUN_GUARD_S = 600


def fuzz_build_dir() -> Path:
    path = Path(os.environ.get("BOOKMARKFS_FUZZ_BUILD", "build-fuzz"))
    return path if path.is_absolute() else REPO / path


def sanitizer_env():
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "abort_on_error=1:detect_leaks=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    return env


@pytest.fixture(scope="module")
def built():
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (scripts/test installs it: "
                    "apt-get install clang libclang-rt-14-dev)")
    res = subprocess.run([str(SCRIPT), "--build"], cwd=REPO, capture_output=True,
                         text=True, timeout=BUILD_GUARD_S)
    assert res.returncode == 0, f"scripts/fuzz --build failed:\n{res.stdout}{res.stderr}"
    return fuzz_build_dir()


def seeds(target):
    files = []
    for kind in ("corpus", "regressions"):
        d = FUZZ / kind / target
        if d.is_dir():
            files += sorted(p for p in d.rglob("*") if p.is_file())
    return files


def test_every_target_is_listed():
    sources = sorted(p.stem for p in FUZZ.glob("fuzz_*.c"))
    assert sources == sorted(TARGETS)
    script = SCRIPT.read_text()
    for t in TARGETS:
        assert t in script, f"scripts/fuzz does not know {t}"


@pytest.mark.parametrize("target", TARGETS)
def test_corpus_is_seeded(target):
    assert len(list((FUZZ / "corpus" / target).iterdir())) >= 3


@pytest.mark.parametrize("target", TARGETS)
def test_replay_corpus_and_regressions(built, target):
    files = seeds(target)
    binary = built / "tests" / "fuzz" / target
    assert os.access(binary, os.X_OK), f"{binary} was not built"
    res = subprocess.run([str(binary)] + [str(f) for f in files], cwd=REPO,
                         capture_output=True, text=True, errors="replace",
                         env=sanitizer_env(), timeout=RUN_GUARD_S)
    out = res.stdout + res.stderr
    last = re.findall(r"^Running: (.*)$", out, re.M)
    assert res.returncode == 0, (
        f"{target} failed on {last[-1] if last else '?'}:\n{out[-4000:]}")
    executed = set(re.findall(r"^Executed (.*) in \d+ ms$", out, re.M))
    missing = [str(f) for f in files if str(f) not in executed]
    assert not missing, f"{target} did not run: {missing}"


def test_unknown_target_is_refused(built):
    res = subprocess.run([str(SCRIPT), "--smoke", "fuzz_no_such_target"], cwd=REPO,
                         capture_output=True, text=True, timeout=RUN_GUARD_S)
    assert res.returncode == 2
    assert "unknown target fuzz_no_such_target" in res.stderr


def test_smoke(built):
    res = subprocess.run([str(SCRIPT), "--smoke"], cwd=REPO, capture_output=True,
                         text=True, errors="replace", env=sanitizer_env(),
                         timeout=RUN_GUARD_S)
    assert res.returncode == 0, f"fuzz smoke found a crash:\n{res.stdout}{res.stderr}"
    for t in TARGETS:
        assert re.search(rf"^{t}: 3s, \d+ runs, ok$", res.stdout, re.M), res.stdout
