"""What the kernel asks of the daemon per key operation, read from the FUSE
debug log (-d): the structure the key write/read benchmarks depend on. A
warm name is not looked up again (the kernel caches names), a write is
OPEN, WRITE, FLUSH, RELEASE, a read sends no FLUSH, and neither does a
commit (a write to a control file uploads in WRITE)."""
import json
import os
import re
import time

import pytest

from tests.support.mount import Mount

OPCODE = re.compile(r"opcode: (\w+) \(\d+\), nodeid: \d+")


@pytest.fixture
def debug_mount(store, tmp_path):
    m = Mount(store, tmp_path / "mnt", extra=["-d"])
    m.start()
    yield m
    m.stop()


def settled(text):
    """Every file opened so far has had its (asynchronous) RELEASE."""
    ops = OPCODE.findall(text)
    return ops.count("RELEASE") >= ops.count("OPEN") + ops.count("CREATE")


def requests_during(m, action):
    """The opcodes the daemon received while action ran, in order, from a
    quiet start to the arrival of the last RELEASE."""
    deadline = time.monotonic() + 10
    while not settled(m.log()) and time.monotonic() < deadline:
        time.sleep(0.01)
    start = len(m.log())
    action()
    while True:
        ops = OPCODE.findall(m.log()[start:])
        if ("RELEASE" in ops and settled(m.log()[start:])) or time.monotonic() > deadline:
            return ops
        time.sleep(0.01)


def write_key(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def read_key(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        data = b""
        while chunk := os.read(fd, 4096):
            data += chunk
        return data.decode()
    finally:
        os.close(fd)


def test_a_warm_key_write_is_four_requests_and_a_read_sends_no_flush(debug_mount):
    job = debug_mount.path / "job"
    job.mkdir()
    key = job / "k"
    write_key(key, '{"epoch_time": 1}')  # creates it
    write_key(key, '{"epoch_time": 1}')  # the kernel's one-off xattr probe
    ops = requests_during(debug_mount, lambda: write_key(key, '{"epoch_time": 2}'))
    assert ops == ["OPEN", "WRITE", "FLUSH", "RELEASE"], ops
    got = []
    ops = requests_during(debug_mount, lambda: got.append(read_key(key)))
    assert got == ['{"epoch_time":2}\n']
    assert "FLUSH" not in ops and "LOOKUP" not in ops, ops
    assert ops[0] == "OPEN" and ops[-1] == "RELEASE", ops


@pytest.mark.parametrize("control", ["running", "completed"])
def test_a_commit_sends_no_flush_and_still_uploads_once(debug_mount, control):
    job = debug_mount.path / "job"
    job.mkdir()
    write_key(job / "k", '{"epoch_time": 7}')
    write_key(job / control, "1\n")  # the name is warm from here on
    before = json.loads((job / ".status").read_text())["last_upload"][control]
    ops = requests_during(debug_mount, lambda: write_key(job / control, "1\n"))
    assert ops == ["OPEN", "WRITE", "RELEASE"], ops
    assert debug_mount.log().count(f"{control} uploaded") == 2
    # The job's .status names the new upload.
    after = json.loads((job / ".status").read_text())["last_upload"][control]
    assert after["keys"] == 1 and after["key"].endswith(f"job_{control}.json")
    assert after["time"] >= before["time"]
