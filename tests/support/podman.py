"""Debian's podman with a private configuration, for the container tests.

- containers.conf of our own: runtime runc (crun refuses a hybrid cgroup
  layout), cgroupfs, file events, and default_ulimits at the current hard
  limits (podman's defaults need CAP_SYS_RESOURCE, which a VM may lack);
- storage (--root) in a cache directory outside the build context, so
  images and build layers are kept between runs on one machine
  (BOOKMARKFS_PODMAN_CACHE, default ~/.cache/bookmarkfs-test/podman), and
  --runroot under /run;
- the Debian base images the Dockerfile's FROM names, made by
  `debootstrap --variant=minbase bookworm` from the host's Debian mirror and
  `podman import`ed under those names (no registry is asked: builds run with
  --pull=never, and --network=host only so that apt-get reaches the mirror).
"""
import fcntl
import hashlib
import os
import sys
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE_NAMES = ("docker.io/library/debian:bookworm", "docker.io/library/debian:bookworm-slim")


def why_not() -> str:
    """'' when podman can run containers here, else the reason."""
    if os.geteuid() != 0:
        return "the container tests need root (FUSE in a container, shared mounts)"
    for tool in ("podman", "runc", "debootstrap"):
        if not shutil.which(tool):
            return f"{tool} is not installed (scripts/deps --test installs it)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    return ""


def debian_mirror() -> str:
    """The host's Debian mirror (apt's sources), else deb.debian.org."""
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    lists = Path("/etc/apt/sources.list")
    if lists.exists():
        for line in lists.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and "security" not in line:
                return next(p for p in parts[1:] if p.startswith("http"))
    return "http://deb.debian.org/debian"


class Podman:
    def __init__(self, cache=None):
        self.cache = Path(cache or os.environ.get("BOOKMARKFS_PODMAN_CACHE")
                          or Path.home() / ".cache" / "bookmarkfs-test" / "podman")
        self.cache.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="bookmarkfs-podman-"))
        # Limits no higher than this process's: raising one needs
        # CAP_SYS_RESOURCE (podman's default nproc failed here even at the
        # current hard limit, so it is lower still).
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        ulimits = [f"nofile={nofile}:{nofile}", "nproc=4096:4096"]
        self.conf = self.tmp / "containers.conf"
        self.conf.write_text(
            "[containers]\n"
            f"default_ulimits = {ulimits!r}\n".replace("'", '"') +
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=str(self.conf))
        # The run root must stay the same for one storage (podman keeps it in
        # its database): one per cache, under /run (gone at reboot, as
        # podman expects).
        tag = hashlib.sha256(str(self.cache.resolve()).encode()).hexdigest()[:12]
        run = Path("/run/bookmarkfs-podman") / tag
        self.base = ["podman", "--root", str(self.cache / "storage"),
                     "--runroot", str(run / "runroot"), "--storage-driver", "overlay",
                     "--tmpdir", str(run / "libpod")]

    def cmd(self, *args):
        return [*self.base, *args]

    def run(self, *args, check=True, timeout=300, **kw):
        r = subprocess.run(self.cmd(*args), env=self.env, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL, **kw)
        if check and r.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({r.returncode}):\n"
                                 f"{r.stdout}\n{r.stderr}")
        return r

    def ensure_base_images(self):
        """The FROM images, made once per cache by debootstrap."""
        if all(self.run("image", "exists", n, check=False).returncode == 0
               for n in BASE_NAMES):
            return
        rootfs = self.tmp / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs),
                        debian_mirror()], check=True, capture_output=True, timeout=900)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        r = subprocess.run(self.cmd("import", "-", BASE_NAMES[0]), stdin=tar.stdout,
                           env=self.env, capture_output=True, text=True, timeout=600)
        tar.stdout.close()
        assert tar.wait() == 0 and r.returncode == 0, r.stderr
        self.run("tag", BASE_NAMES[0], BASE_NAMES[1])
        shutil.rmtree(rootfs, ignore_errors=True)

    def build(self, tag):
        """deploy/Dockerfile, built from the repository as its header says."""
        return self.run("build", "--pull=never", "--network=host", "-f",
                        str(REPO / "deploy" / "Dockerfile"), "--ignorefile",
                        str(REPO / "deploy" / "Dockerfile.dockerignore"), "-t", tag,
                        str(REPO), timeout=1200)

    def prepared(self):
        """Held while the base images and the image are made, so that the
        container tests wait for a `prepare` run started before them (see
        scripts/test) and then find both in the cache."""
        lock = open(self.cache / "prepare.lock", "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock

    def build_as_readme(self, args):
        """The README's build command (docker build ... .), for podman: no
        registry (--pull=never), the host network only for apt's mirror, and
        the ignore file beside the Dockerfile."""
        return self.run(*args, "--pull=never", "--network=host", "--ignorefile",
                        str(REPO / "deploy" / "Dockerfile.dockerignore"), str(REPO),
                        timeout=1800)

    def close(self):
        self.run("rm", "-a", "-f", "-t", "5", check=False)
        self.run("pod", "rm", "-a", "-f", check=False)
        self.run("volume", "prune", "-f", check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


README_BUILD = ["build", "-f", "deploy/Dockerfile", "-t", "bookmarkfs"]


def prepare():
    """Makes the base images and builds the image of the README's build
    command into the cache, so that the container tests later find them
    there. scripts/test runs it in the background while the other suites
    run (debootstrap and a cold image build take minutes on a new machine)."""
    if why_not():
        print(f"podman prepare: skipped: {why_not()}")
        return 0
    p = Podman()
    try:
        with p.prepared():
            if p.run("info", check=False).returncode != 0:
                print("podman prepare: skipped: podman info fails")
                return 0
            p.ensure_base_images()
            p.build_as_readme(README_BUILD)
    finally:
        p.close()
    print("podman prepare: base images and image ready")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["prepare"]:
        sys.exit("usage: python3 -m tests.support.podman prepare")
    sys.exit(prepare())
