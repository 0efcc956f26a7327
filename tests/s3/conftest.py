"""Fixtures for the S3 store tests: store_cli, and a real S3 server on
loopback: each test that takes `s3rver` runs twice, on s3rver (lax: checks
no signature) and on Ceph RGW (verifies SigV4 on every request). A test
that only one of them can show is marked only_s3rver / only_rgw, with why."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.paths import build_dir  # noqa: E402
from tests.support.s3rver import S3rver  # noqa: E402
from tests.support.storecli import StoreCli  # noqa: E402


@pytest.fixture(scope="session")
def store_cli_path():
    path = build_dir() / "tests" / "store_cli"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: build it with ninja -C <build> tests/store_cli")
    return path


@pytest.fixture(scope="module")
def s3rver_only():
    with S3rver() as server:
        yield server


@pytest.fixture(scope="module", params=["s3rver", "rgw"])
def s3rver(request):
    """The S3 server of the test: s3rver (one per module) or RGW (one per
    run, tests/conftest.py)."""
    if request.param == "s3rver":
        return request.getfixturevalue("s3rver_only")
    return request.getfixturevalue("rgw_server")


@pytest.fixture
def cli(store_cli_path, s3rver):
    return StoreCli(store_cli_path, s3rver.endpoint)
