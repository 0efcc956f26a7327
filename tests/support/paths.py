"""Where the repository and the build directory are (env BOOKMARKFS_BUILD,
default <repo>/build)."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_dir() -> Path:
    return Path(os.environ.get("BOOKMARKFS_BUILD", str(REPO / "build"))).resolve()
