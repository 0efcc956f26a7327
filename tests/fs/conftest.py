"""Every filesystem test that takes `store` (or `mount`, `mnt`) runs against
both stores, and S3 on both servers: the local directory, s3rver and Ceph
RGW on 127.0.0.1 (RGW verifies every request's signature). The fault,
bad-input, security and request-loop tests take `s3server`, the server they
put the fault proxy in front of: RGW, so that the signer is checked on their
requests too; `rgw_server` and `rgw_buckets` are in tests/conftest.py."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.mount import DirStore, Mount, S3Store  # noqa: E402
from tests.support.s3rver import S3rver  # noqa: E402


@pytest.fixture(scope="session")
def s3rver_server():
    with S3rver() as server:
        yield server


@pytest.fixture(scope="session")
def s3server(rgw_server):
    """The server behind the fault proxy: RGW, so that the signer is checked
    on the requests of the fault, bad-input and security tests too."""
    return rgw_server


@pytest.fixture(params=["dir", "s3", "rgw"])
def store(request, tmp_path):
    if request.param == "dir":
        return DirStore(tmp_path / "store")
    if request.param == "rgw":
        return S3Store(request.getfixturevalue("rgw_server"))
    return S3Store(request.getfixturevalue("s3rver_server"))


@pytest.fixture
def mount(store, tmp_path):
    """A started mount; the test may stop and start it again."""
    m = Mount(store, tmp_path / "mnt")
    m.start()
    yield m
    m.stop()


@pytest.fixture
def mnt(mount):
    return mount.path
