"""mount(8), /etc/fstab and meson install.

`mount -t fuse.bookmarkfs` runs /sbin/mount.fuse3, which runs the program
named by the type (`bookmarkfs`) through /bin/sh. mount(8) removes PATH from
the environment of its helpers, so the shell searches only its default path
(/usr/local/sbin first). The mount(8) tests therefore run in a private mount
namespace of their own, in which a directory holding a `bookmarkfs` symlink to
the build's binary is bind-mounted over /usr/local/sbin: nothing outside that
namespace sees the bind or the mounts, and they all go away with it. Every
command that touches a mount runs in that namespace (nsenter), and each test
checks that the daemon that answered is the build's binary.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.mount import DATASET, DLZ, DOMAIN, LZ, USER, binary
from tests.support.paths import REPO, build_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mount(8) and namespaces need root")

KEY_RE = (rf"{DOMAIN}/{DATASET}/upload_date=\d+/{USER}/others/"
          r"(?P<job>.+)_(?P<kind>running|completed)\.json")


def store_options(tmp: Path, cache="cache") -> str:
    """The -o options of a mount on a dir store under tmp (no S3 needed).
    Two mounts of the same dataset need two journals (cache dirs)."""
    (tmp / "store").mkdir(exist_ok=True)
    return ",".join([f"store=dir:{tmp / 'store'}", f"lz_bucket={LZ}", f"dlz_bucket={DLZ}",
                     f"domain={DOMAIN}", f"dataset={DATASET}", f"user={USER}",
                     f"cache_dir={tmp / cache}"])


def uploaded(tmp: Path) -> dict:
    """{(job, kind): body} of the objects in the dir store's LZ bucket."""
    base = tmp / "store" / LZ
    out = {}
    for p in base.rglob("*.json") if base.is_dir() else []:
        m = re.fullmatch(KEY_RE, str(p.relative_to(base)))
        assert m, f"unexpected object {p.relative_to(base)}"
        out[(m["job"], m["kind"])] = p.read_bytes()
    return out


def bin_dir(tmp: Path) -> Path:
    d = tmp / "bin"
    d.mkdir(exist_ok=True)
    link = d / "bookmarkfs"
    if not link.exists():
        link.symlink_to(binary().resolve())
    return d


def daemon_pids(mnt: Path) -> list:
    """PIDs of the bookmarkfs processes serving mnt (the daemon that
    mount.fuse3 started and that detached); found by their command line."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"bookmarkfs" and str(mnt).encode() in argv:
            pids.append(int(d.name))
    return pids


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, seconds=20) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Namespace:
    """A process in a new private mount namespace; commands join it with
    nsenter. With bind=DIR, DIR is mounted over /usr/local/sbin in it."""

    def __init__(self, bind: Path = None):
        script = ('[ -z "$1" ] || mount --bind "$1" /usr/local/sbin || exit 1\n'
                  'echo ready\nexec sleep infinity\n')
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
             str(bind or "")], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if line != b"ready\n":
            self.proc.wait()
            raise RuntimeError("could not make a mount namespace: "
                               + self.proc.stderr.read().decode(errors="replace"))
        self.pid = self.proc.pid
        self.mountpoints = []

    def run(self, *cmd, env=None, check=True):
        r = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "--", *map(str, cmd)],
                           capture_output=True, text=True, timeout=60, env=env)
        if check:
            assert r.returncode == 0, f"{cmd} exited {r.returncode}:\n{r.stdout}{r.stderr}"
        return r

    def sh(self, script, *args):
        return self.run("sh", "-ec", script, "sh", *args)

    def mounts(self) -> list:
        """(mountpoint, fstype, source) of every mount in the namespace."""
        out = []
        for line in Path(f"/proc/{self.pid}/mountinfo").read_text().splitlines():
            left, right = line.split(" - ", 1)
            fstype, source = right.split()[:2]
            out.append((left.split()[4], fstype, source))
        return out

    def mounted(self, mnt: Path) -> list:
        return [m for m in self.mounts() if m[0] == str(mnt)]

    def close(self):
        """Unmount what the test left mounted, end its daemons, then the
        namespace's own process (all by PID)."""
        for mnt in self.mountpoints:
            if self.mounted(mnt):
                self.run("umount", "-l", mnt, check=False)
            for pid in daemon_pids(mnt):
                if alive(pid) and not wait_gone(pid, 5):
                    os.kill(pid, signal.SIGTERM)
                    if not wait_gone(pid, 10):
                        os.kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def ns(tmp_path):
    n = Namespace(bind=bin_dir(tmp_path))
    yield n
    n.close()


def check_mount_works(ns: Namespace, tmp: Path, mnt: Path, job: str):
    """The mount is bookmarkfs from this build; a job's key and running
    upload reach the dir store."""
    (m,) = ns.mounted(mnt)
    assert m[1] == "fuse.bookmarkfs", m
    pids = [p for p in daemon_pids(mnt) if alive(p)]
    assert len(pids) == 1, pids
    assert Path(os.readlink(f"/proc/{pids[0]}/exe")) == binary().resolve()
    r = ns.sh('mkdir "$1/$2"; printf 42 > "$1/$2/k"; echo 1 > "$1/$2/running"; ls "$1/$2"',
              mnt, job)
    assert r.stdout.split() == ["completed", "k", "running"]
    assert uploaded(tmp)[(job, "running")] == b'{"k":42}'
    return pids[0]


def umount(ns: Namespace, mnt: Path, pid: int):
    ns.run("umount", mnt)
    assert not ns.mounted(mnt)
    assert wait_gone(pid), "bookmarkfs did not exit after umount"


def test_mount_t_fuse_bookmarkfs_and_umount(ns, tmp_path):
    mnt = tmp_path / "state"
    mnt.mkdir()
    ns.mountpoints.append(mnt)
    ns.run("mount", "-t", "fuse.bookmarkfs", "bookmarkfs", mnt, "-o",
           "_netdev," + store_options(tmp_path))
    pid = check_mount_works(ns, tmp_path, mnt, "orders")
    umount(ns, mnt, pid)


def test_mount_reports_a_bad_option_and_mounts_nothing(ns, tmp_path):
    mnt = tmp_path / "state"
    mnt.mkdir()
    ns.mountpoints.append(mnt)
    r = ns.run("mount", "-t", "fuse.bookmarkfs", "bookmarkfs", mnt, "-o",
               store_options(tmp_path) + ",resume_from=yesterday", check=False)
    assert r.returncode != 0
    assert "bookmarkfs: invalid --resume-from 'yesterday'" in r.stderr, r.stderr
    assert not ns.mounted(mnt) and not daemon_pids(mnt)


def test_fstab_lines_with_netdev_noauto_and_automount(ns, tmp_path):
    auto, manual = tmp_path / "auto", tmp_path / "manual"
    for m in (auto, manual):
        m.mkdir()
        ns.mountpoints.append(m)
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# bookmarkfs, as in the documentation\n"
        f"bookmarkfs {auto} fuse.bookmarkfs _netdev,nofail,x-systemd.automount,"
        f"x-systemd.idle-timeout=0,{store_options(tmp_path, 'cache-auto')} 0 0\n"
        f"bookmarkfs {manual} fuse.bookmarkfs "
        f"noauto,_netdev,{store_options(tmp_path, 'cache-manual')} 0 0\n")

    ns.run("mount", "-T", fstab, "-a")
    assert ns.mounted(auto) and not ns.mounted(manual)  # noauto is left alone
    ns.run("mount", "-T", fstab, manual)  # by mount point, options from the file
    pid_auto = check_mount_works(ns, tmp_path, auto, "a")
    pid_manual = check_mount_works(ns, tmp_path, manual, "m")

    # mount -a again: both are recognised as mounted, nothing is stacked.
    ns.run("mount", "-T", fstab, "-a")
    assert len(ns.mounted(auto)) == 1 and len(ns.mounted(manual)) == 1

    umount(ns, auto, pid_auto)
    umount(ns, manual, pid_manual)


def test_mount_fuse3_finds_bookmarkfs_on_path(tmp_path):
    """mount.fuse3 itself (what mount(8) runs) keeps PATH: a bookmarkfs
    first on PATH is the one that runs."""
    n = Namespace()  # no bind: only PATH leads to the build's binary
    try:
        mnt = tmp_path / "state"
        mnt.mkdir()
        n.mountpoints.append(mnt)
        env = dict(os.environ, PATH=f"{bin_dir(tmp_path)}:{os.environ.get('PATH', '')}")
        n.run("mount.fuse3", "bookmarkfs", mnt, "-t", "fuse.bookmarkfs",
              "-o", "_netdev,nofail,noauto," + store_options(tmp_path), env=env)
        pid = check_mount_works(n, tmp_path, mnt, "j")
        umount(n, mnt, pid)
    finally:
        n.close()


def test_mount_fuse3_ignores_fstab_only_options(tmp_path):
    n = Namespace()
    try:
        mnt = tmp_path / "state"
        mnt.mkdir()
        n.mountpoints.append(mnt)
        env = dict(os.environ, PATH=f"{bin_dir(tmp_path)}:{os.environ.get('PATH', '')}")
        n.run("mount.fuse3", "bookmarkfs", mnt, "-t", "fuse.bookmarkfs", "-o",
              "defaults,x-systemd.automount,comment=x," + store_options(tmp_path), env=env)
        pid = check_mount_works(n, tmp_path, mnt, "j")
        umount(n, mnt, pid)
    finally:
        n.close()


# --- meson install ---------------------------------------------------------

EXPECTED = {
    "bin": "bin/bookmarkfs",
    "man": "share/man/man1/bookmarkfs.1",
    "mount": "share/doc/bookmarkfs/examples/mnt-state.mount",
    "automount": "share/doc/bookmarkfs/examples/mnt-state.automount",
}


def plan_covers(build: Path) -> bool:
    try:
        planned = json.loads((build / "meson-info" / "intro-installed.json").read_text())
    except (OSError, ValueError):
        return False
    return all(any(dest.endswith("/" + rel) for dest in planned.values())
               for rel in EXPECTED.values())


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """meson install --destdir into a temporary tree: from the build dir when
    its install plan is current, else from a private build dir (never
    reconfiguring the shared one)."""
    tmp = tmp_path_factory.mktemp("install")
    build = build_dir()
    if not plan_covers(build):
        build = tmp / "build"
        subprocess.run(["meson", "setup", str(build), str(REPO)], check=True,
                       capture_output=True, timeout=300)
        subprocess.run(["ninja", "-C", str(build)], check=True, capture_output=True,
                       timeout=600)
    dest = tmp / "dest"
    r = subprocess.run(["meson", "install", "-C", str(build), "--no-rebuild", "--destdir",
                        str(dest)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    files = {str(p.relative_to(dest)): p for p in dest.rglob("*") if p.is_file()}
    return {k: next((p for rel, p in files.items() if rel.endswith(v)), None)
            for k, v in EXPECTED.items()}


def test_install_puts_binary_man_page_and_systemd_example(installed):
    missing = [k for k, p in installed.items() if p is None]
    assert not missing, f"not installed: {missing}"
    assert os.access(installed["bin"], os.X_OK)
    assert subprocess.run([str(installed["bin"]), "--version"], capture_output=True,
                          timeout=30).returncode == 0
    for k in ("mount", "automount"):
        assert installed[k].read_bytes() == (REPO / "deploy" / "systemd" /
                                             installed[k].name).read_bytes()


def test_man_page_renders_without_warnings(installed):
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(installed["man"])],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_man_page_documents_every_option_and_default():
    man = subprocess.run(["groff", "-man", "-Tutf8", "-P-cbou", str(REPO / "doc" / "bookmarkfs.1")],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    flat = re.sub(r"\u2010\s+", "", man)  # undo hyphenation at line ends
    flat = re.sub(r"\s+", " ", flat.replace("\u2010", "-").replace("\u2212", "-"))
    usage = subprocess.run([str(binary()), "--help"], capture_output=True, text=True,
                           timeout=30).stdout
    options = set(re.findall(r"^\s+(?:-\w, )?(--[a-z-]+|-[a-zA-Z])\b", usage, re.M))
    assert {"--store", "--lz-bucket", "--cache-dir", "-f", "-o"} <= options
    for opt in sorted(options):
        assert re.search(rf"(^|[\s,(]){re.escape(opt)}\b", flat), f"{opt} not in the man page"
    # every "(default: X)" of --help appears in the man page's text too
    for default in re.findall(r"default: ([0-9]+)\)", usage):
        assert f"Default: {default}." in flat, default
    for section in ("THE TREE", "OPTIONS", "ERRORS", "EXIT STATUS", "CREDENTIALS"):
        assert section in man
    for errno in ("EINVAL", "EIO", "EACCES", "ETIMEDOUT", "EPERM", "ENOTEMPTY", "EXDEV"):
        assert errno in flat


def test_systemd_units_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    units = [REPO / "deploy" / "systemd" / n for n in ("mnt-state.mount", "mnt-state.automount")]
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "mnt-state" not in r.stderr, r.stderr
    mount = units[0].read_text()
    assert re.search(r"^Type=fuse\.bookmarkfs$", mount, re.M)
    assert re.search(r"^Options=.*\b_netdev\b", mount, re.M)
