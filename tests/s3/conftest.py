"""Fixtures for the S3 store tests: a real s3rver on loopback, store_cli."""
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
def s3rver():
    with S3rver() as server:
        yield server


@pytest.fixture
def cli(store_cli_path, s3rver):
    return StoreCli(store_cli_path, s3rver.endpoint)
