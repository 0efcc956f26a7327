"""Shared by every suite: each test gets its own state dir, so the default
--cache-dir (the journal, $XDG_STATE_HOME/bookmarkfs) never outlives a test
nor lands in the home directory of whoever runs the tests; and one Ceph RGW
for the whole run (tests/support/rgw.py), started when a test first needs
it."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.rgw import Rgw  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "only_s3rver(why): runs on s3rver only (the parametrized S3 server "
        "fixtures skip it on RGW, giving why)")
    config.addinivalue_line(
        "markers", "only_rgw(why): runs on RGW only (a verifying server), skipped on "
        "s3rver, giving why")


def pytest_runtest_setup(item):
    """Skips a test marked only_s3rver / only_rgw on the other server, the
    server being the parameter of the parametrized fixture `s3rver` (the S3
    suites) or `store` (the file system suite)."""
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec else {}
    server = {"s3rver": "s3rver", "s3": "s3rver", "rgw": "rgw"}.get(
        params.get("s3rver") or params.get("store"))
    for mark, other in (("only_s3rver", "rgw"), ("only_rgw", "s3rver")):
        m = item.get_closest_marker(mark)
        if m and server == other:
            pytest.skip(f"{mark}: {m.args[0] if m.args else ''}")


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture(scope="session")
def rgw_server():
    """Ceph RGW on 127.0.0.1, one for the whole run: tests that need a
    bucket of their own take rgw_buckets."""
    with Rgw() as server:
        yield server


@pytest.fixture
def rgw_buckets(rgw_server):
    """A fresh pair of buckets on RGW for one test, (lz, dlz), with valid AWS
    names; emptied and removed afterwards."""
    names = (rgw_server.unique_bucket("lz"), rgw_server.unique_bucket("dlz"))
    yield names
    c = rgw_server.client
    for b in names:
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=b):
            for o in page.get("Contents", []):
                c.delete_object(Bucket=b, Key=o["Key"])
        c.delete_bucket(Bucket=b)
