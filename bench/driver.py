"""scripts/bench: every bookmarkfs benchmark comparison, side by side, in one run.

One machine, one run, one s3rver on 127.0.0.1. Repeats are interleaved (each
repeat runs every target once, in a rotating order), so a slow minute of the
machine hits every target alike; each number is the median with min-max.
Writes results.json, table.md, plot.png (gnuplot) into --out.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.mount import binary as bookmarkfs_binary
from tests.support.paths import REPO, build_dir
from tests.support.s3rver import ACCESS_KEY, REGION, SECRET_KEY, S3rver, client_env

from bench import plot
from bench.statestore_standin import StateStore
from tests.support import history as H

LZ, DLZ = "lz-bucket", "dlz-bucket"
S3FS_BUCKET = "s3fs-bucket"
DOMAIN, USER = "bench_domain", "bench_user"

# Commits of up to 1,000 keys take a few ms, about the spread of one sample
# on a busy machine: they get many more repeats than the 100,000-key ones.
FULL = dict(reps=5, key_reps=21, commit_reps=61, commit_reps_large=15, commit_warmup=5,
            key_iters=1000,
            s3fs_iters=50, nkeys=100,
            commit_sizes=[10, 1000, 100000], goc_sizes=[10, 1000, 10000],
            scale_keys=100000, scale_jobs=1000, parallel=[1, 2, 4], par_iters=1000,
            history_sizes=[1000, 10000, 50000], history_reps=7, history_fresh_reps=3)
QUICK = dict(reps=2, key_reps=2, commit_reps=2, commit_reps_large=2, commit_warmup=1,
             key_iters=100,
             s3fs_iters=10, nkeys=10,
             commit_sizes=[10, 1000], goc_sizes=[10, 100],
             scale_keys=1000, scale_jobs=20, parallel=[1, 2, 4], par_iters=100,
             history_sizes=[100, 300], history_reps=2, history_fresh_reps=1)

SECTIONS = ("keys", "commit", "goc", "scale", "parallel", "history", "lease")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stats(samples):
    s = sorted(samples)
    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "n": len(s),
            "samples": samples}


def rotate(items, k):
    k %= len(items)
    return items[k:] + items[:k]


def value_of(i):
    return {"epoch_time": 156234987 + i, "file": f"part-{i % 100000:05d}.parquet"}


def state_of(n):
    return {f"dataset_{i:06d}.table": value_of(i) for i in range(n)}


# ---------------------------------------------------------------- machine

def machine():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass

    def version(cmd):
        try:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, timeout=10).stdout.strip().splitlines()
            return out[0] if out else "?"
        except (OSError, subprocess.TimeoutExpired):
            return None
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "mem_gb": mem_gb,
        "libfuse": version(["pkg-config", "--modversion", "fuse3"]),
        "s3fs": version(["s3fs", "--version"]),
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------- helpers

def find_tmpfs():
    """A writable tmpfs from /proc/mounts (the no-FUSE baseline lives there)."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) > 3 and parts[2] == "tmpfs" and "rw" in parts[3].split(","):
            path = parts[1].replace("\\040", " ")
            if path.startswith("/sys") or not os.access(path, os.W_OK | os.X_OK):
                continue
            return path
    return None


def cc(out, sources, extra=(), cflags=()):
    cmd = ["cc", "-O2", "-std=gnu17", "-Wall", *cflags, "-o", str(out), *map(str, sources),
           *extra]
    subprocess.run(cmd, check=True)
    return out


def pkg_libs(*names):
    return subprocess.run(["pkg-config", "--cflags", "--libs", *names], check=True,
                          stdout=subprocess.PIPE, text=True).stdout.split()


def sanitize_flags(build):
    """-fsanitize=... when the build's static libraries were built with it."""
    try:
        opts = json.loads((build / "meson-info" / "intro-buildoptions.json").read_text())
    except (OSError, ValueError):
        return []
    for o in opts:
        if o["name"] == "b_sanitize" and o["value"] not in ("none", ""):
            return [f"-fsanitize={o['value']}"]
    return []


def s3_link_args(build):
    """How the build links a program on the S3 store (tests/store_cli's link
    line in build.ninja), so rawput follows whatever s3/ comes to need."""
    import shlex
    try:
        lines = (build / "build.ninja").read_text().splitlines()
    except OSError:
        lines = []
    for i, line in enumerate(lines):
        if line.startswith("build tests/store_cli: ") and i + 1 < len(lines):
            link = lines[i + 1].strip()
            if link.startswith("LINK_ARGS = "):
                args = shlex.split(link[len("LINK_ARGS = "):])
                return [str(build / a) if a.endswith(".a") and not os.path.isabs(a) else a
                        for a in args]
    return ([str(build / lib) for lib in ("s3/libs3.a", "store/libstore.a",
                                          "util/libutil.a")] +
            pkg_libs("libcurl", "libssl", "libcrypto", "libxml-2.0", "jansson", "inih") +
            ["-lpthread"])


def build_tools(build, tools_dir, want_passthrough):
    tools_dir.mkdir(parents=True, exist_ok=True)
    here = REPO / "bench"
    tools = {"keyloop": cc(tools_dir / "keyloop", [here / "keyloop.c"])}
    for lib in ("s3/libs3.a", "store/libstore.a", "util/libutil.a"):
        if not (build / lib).exists():
            raise SystemExit(f"bench: {lib} missing in the build: build it first")
    tools["rawput"] = cc(tools_dir / "rawput", [here / "rawput.c"], s3_link_args(build),
                         cflags=["-I", str(REPO), "-D_GNU_SOURCE", *sanitize_flags(build)])
    tools["passthrough_ll"] = None
    if want_passthrough:
        src = find_passthrough_ll()
        if src:
            tools["passthrough_ll"] = cc(tools_dir / "passthrough_ll", [src],
                                         pkg_libs("fuse3"),
                                         cflags=["-I", str(src.parent), "-w"])
        else:
            log("passthrough_ll.c not found (libfuse3-dev examples): FUSE floor skipped")
    return tools


def find_passthrough_ll():
    """libfuse's example, from the Debian libfuse3-dev docs (never committed)."""
    docs = Path("/usr/share/doc/libfuse3-dev/examples")
    for name in ("passthrough_ll.c", "passthrough_ll.c.gz"):
        p = docs / name
        if p.exists():
            if name.endswith(".gz"):
                import gzip
                out = Path(tempfile.mkdtemp(prefix="bench-ptll-")) / "passthrough_ll.c"
                out.write_bytes(gzip.decompress(p.read_bytes()))
                helper = docs / "passthrough_helpers.h"
                if helper.exists():
                    shutil.copy(helper, out.parent)
                return out
            return p
    return None


class FuseProc:
    """A FUSE daemon we started (-f): mounted on start, unmounted and waited
    for on stop; signals only ever go to its own PID."""

    def __init__(self, name, cmd, mnt, env=None, log_dir=None):
        self.name, self.cmd, self.mnt, self.env = name, cmd, Path(mnt), env
        self.log_path = Path(log_dir or self.mnt.parent) / f"{self.mnt.name}.log"
        self.proc = None

    def start(self, timeout=30):
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mnt):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not mount in time")
            time.sleep(0.02)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def cpu_seconds(self):
        """User + system CPU of the daemon so far, all its threads."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kb(self):
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
        return out

    def stop(self):
        if self.proc is None:
            return
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", str(self.mnt)], check=False,
                           stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)
        self.proc = None
        self.log_file.close()


def write_file(path, data: bytes):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def write_file_p(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def newest_in(listed, job, domain, dataset):
    """The rules of SPEC §2 over (bucket, key, lm_ms): (bucket, key) or None."""
    import re
    best = None
    prefix = f"{domain}/{dataset}/"
    for bucket, key, lm in listed:
        if not key.startswith(prefix) or key.rsplit("/", 1)[-1] != f"{job}_completed.json":
            continue
        m = re.search(r"/upload_date=(\d+)/", "/" + key[len(prefix):])
        if not m:
            continue
        c = (int(m.group(1)), lm, key.encode(), bucket.encode())
        if best is None or c > best[0]:
            best = (c, bucket, key)
    return None if best is None else (best[1], best[2])


def timed(fn):
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6  # ms


def run_quiet(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args):
        self.a = args
        self.cfg = dict(QUICK if args.quick else FULL)
        if args.reps:
            for k in ("reps", "key_reps", "commit_reps", "commit_reps_large"):
                self.cfg[k] = args.reps
        self.out = Path(args.out).resolve()
        self.build = build_dir()
        self.procs = []
        self.daemons = {}  # target name: its FuseProc
        self.results = {"quick": args.quick, "config": self.cfg, "machine": machine()}

    # -- set-up
    def setup(self):
        tmpfs = self.a.tmpfs or find_tmpfs()
        if not tmpfs:
            raise SystemExit("bench: no writable tmpfs found (give --tmpfs DIR)")
        self.ws = Path(tempfile.mkdtemp(prefix="bookmarkfs-bench-", dir=tmpfs))
        self.results["loadavg_start"] = os.getloadavg()
        self.tools = build_tools(self.build, self.build / "bench-tools", True)
        self.bin = bookmarkfs_binary()
        log(f"bookmarkfs: {self.bin.relative_to(REPO) if self.bin.is_relative_to(REPO) else self.bin.name}")
        # s3rver keeps its objects under tempfile's directory: put them on
        # the tmpfs too, so that disk latency (and discards at clean-up) stay
        # out of the numbers. The same server serves every comparison.
        saved, tempfile.tempdir = tempfile.tempdir, str(self.ws)
        try:
            self.s3 = S3rver().start()
        finally:
            tempfile.tempdir = saved
        import boto3
        from botocore.config import Config
        self.client = boto3.client(
            "s3", endpoint_url=self.s3.endpoint, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))
        for b in (LZ, DLZ, S3FS_BUCKET):
            self.client.create_bucket(Bucket=b)
        self.env = client_env()
        self.rawput = subprocess.Popen(
            [str(self.tools["rawput"]), self.s3.endpoint, LZ], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=self.env)

    def mount_bookmarkfs(self, dataset, extra=()):
        mnt = self.ws / f"mnt-bfs-{dataset}"
        cmd = [str(self.bin), "--store=s3", f"--endpoint={self.s3.endpoint}", "--path-style",
               f"--lz-bucket={LZ}", f"--dlz-bucket={DLZ}", f"--domain={DOMAIN}",
               f"--dataset={dataset}", f"--user={USER}",
               f"--cache-dir={self.ws / ('cache-' + dataset)}", *extra, "-f", str(mnt)]
        return self.start(FuseProc("bookmarkfs", cmd, mnt, env=self.env))

    def start(self, p):
        p.start()
        self.procs.append(p)
        return p

    def stop(self, p):
        p.stop()
        self.procs.remove(p)

    def teardown(self):
        for p in reversed(list(self.procs)):
            try:
                p.stop()
            except Exception as e:  # keep cleaning
                log(f"stopping {p.name}: {e}")
        self.procs = []
        if getattr(self, "rawput", None):
            self.rawput.stdin.close()
            try:
                self.rawput.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.rawput.kill()
                self.rawput.wait()
        if getattr(self, "s3", None):
            self.s3.close()
        if getattr(self, "ws", None):
            shutil.rmtree(self.ws, ignore_errors=True)

    # -- key write / read
    def keyloop(self, mode, d, iters, start_at=None):
        cmd = [str(self.tools["keyloop"]), mode, str(d), str(self.cfg["nkeys"]), str(iters)]
        if start_at:
            cmd.append(str(start_at))
        return cmd

    def run_keyloop(self, mode, d, iters):
        out = subprocess.run(self.keyloop(mode, d, iters), check=True, stdout=subprocess.PIPE,
                             text=True, timeout=600).stdout
        return json.loads(out)

    def key_targets(self):
        """{name: directory of a job} for every target of comparisons 1 and 5."""
        t = {}
        plain = self.ws / "tmpfs"
        (plain / "job").mkdir(parents=True)
        t["tmpfs"] = plain / "job"
        if self.tools["passthrough_ll"]:
            src = self.ws / "pt-src"
            (src / "job").mkdir(parents=True)
            for i in range(4):
                (src / f"par{i}").mkdir()
            mnt = self.ws / "mnt-pt"
            self.daemons["passthrough_ll"] = self.start(
                FuseProc("passthrough_ll", [str(self.tools["passthrough_ll"]), "-f",
                                            "-o", f"source={src}", str(mnt)], mnt))
            t["passthrough_ll"] = mnt / "job"
        self.bfs_keys = self.mount_bookmarkfs("bench_keys")
        (self.bfs_keys.mnt / "job").mkdir()
        t["bookmarkfs"] = self.bfs_keys.mnt / "job"
        self.daemons["bookmarkfs"] = self.bfs_keys
        # The same daemon on libfuse's own request loop: what fs/loop.c buys.
        fl = self.mount_bookmarkfs("bench_keys_fuse_loop", ["--fuse-loop"])
        (fl.mnt / "job").mkdir()
        t["bookmarkfs_fuse_loop"] = fl.mnt / "job"
        self.daemons["bookmarkfs_fuse_loop"] = fl
        if shutil.which("s3fs") and not self.a.no_s3fs:
            pw = self.ws / "s3fs.passwd"
            pw.write_text(f"{ACCESS_KEY}:{SECRET_KEY}\n")
            pw.chmod(0o600)
            mnt = self.ws / "mnt-s3fs"
            self.daemons["s3fs"] = self.start(FuseProc("s3fs", ["s3fs", S3FS_BUCKET, str(mnt), "-f",
                                         "-o", f"url={self.s3.endpoint}",
                                         "-o", "use_path_request_style",
                                         "-o", f"endpoint={REGION}",
                                         "-o", f"passwd_file={pw}"], mnt, env=self.env))
            (mnt / "job").mkdir()
            t["s3fs"] = mnt / "job"
        else:
            log("s3fs not installed (apt-get install s3fs): skipped")
        return t

    def bench_keys(self):
        log("1. key write / read")
        t = self.targets
        names = list(t)
        res = {"write": {n: [] for n in names}, "read": {n: [] for n in names}}
        cpu = {n: [0.0, 0] for n in names if n in self.daemons}  # seconds, writes
        for n in names:  # create every key once, then warm up
            self.run_keyloop("write", t[n], self.cfg["nkeys"])
            self.run_keyloop("read", t[n], self.cfg["nkeys"])
        for rep in range(self.cfg["key_reps"]):
            for n in rotate(names, rep):
                iters = self.cfg["s3fs_iters"] if n == "s3fs" else self.cfg["key_iters"]
                for mode in ("write", "read"):
                    counted = n in cpu and mode == "write"
                    before = self.daemons[n].cpu_seconds() if counted else 0
                    r = self.run_keyloop(mode, t[n], iters)
                    res[mode][n].append(r["ns_per_op"] / 1000)  # us
                    if counted:
                        cpu[n][0] += self.daemons[n].cpu_seconds() - before
                        cpu[n][1] += r["ops"]
        self.results["keys"] = {
            "unit": "us/op", "iters": self.cfg["key_iters"], "s3fs_iters": self.cfg["s3fs_iters"],
            "write": {n: stats(v) for n, v in res["write"].items()},
            "read": {n: stats(v) for n, v in res["read"].items()},
            # the daemon's user+system CPU over every timed write, per write
            "daemon_cpu_us_per_write": {n: secs * 1e6 / ops for n, (secs, ops) in cpu.items()
                                        if ops}}

    # -- commit
    def put_raw(self, body_file, key):
        self.rawput.stdin.write(f"{body_file} {key}\n")
        self.rawput.stdin.flush()
        line = self.rawput.stdout.readline().split()
        if not line or line[0] == "ERR":
            raise RuntimeError(f"rawput failed: {line}")
        return int(line[0]) / 1e6

    def bench_commit(self):
        log("2. commit vs raw PUT vs StateStore stand-in")
        m = self.bfs_keys.mnt
        sizes = self.cfg["commit_sizes"]
        bodies, standins = {}, {}
        for n in sizes:
            state = state_of(n)
            job = m / f"commit{n}"
            job.mkdir()
            write_file(job / ".state.json", json.dumps(state).encode())
            body = (job / ".state.json").read_bytes().rstrip(b"\n")
            bodies[n] = self.ws / f"body{n}.json"
            bodies[n].write_bytes(body)
            ss = StateStore(LZ, DLZ, DOMAIN, "bench_standin", USER, client=self.client)
            data = ss.get_or_create(f"commit{n}")
            data.from_bytes(state)
            standins[n] = (ss, data)

        def bfs(n):
            def go():
                fd = os.open(m / f"commit{n}" / "running", os.O_WRONLY)
                try:
                    os.write(fd, b"1\n")
                finally:
                    os.close(fd)
            return timed(go)

        def raw(n):
            key = (f"{DOMAIN}/bench_raw/upload_date={int(time.time())}/{USER}/others/"
                   f"commit{n}_running.json")
            return self.put_raw(bodies[n], key)

        def standin(n):
            ss, data = standins[n]
            return timed(lambda: ss.update(data))

        impls = {"bookmarkfs": bfs, "raw_put": raw, "standin_boto3": standin}
        res = {n: {k: [] for k in impls} for n in sizes}
        # Warm-up, the same for all: connections, first objects, and s3rver's
        # JIT, which makes its first few answers slower.
        for _ in range(self.cfg["commit_warmup"]):
            for n in sizes:
                for f in impls.values():
                    f(n)
        def reps(n):
            return self.cfg["commit_reps"] if n <= 1000 else self.cfg["commit_reps_large"]

        for rep in range(max(map(reps, sizes))):
            for n in sizes:
                if rep >= reps(n):
                    continue
                for k in rotate(list(impls), rep):
                    res[n][k].append(impls[k](n))
        self.results["commit"] = {
            "unit": "ms", "raw_put": "bench/rawput.c: the project's s3/ client, one store, "
                                     "kept-alive libcurl connection",
            "bytes": {str(n): bodies[n].stat().st_size for n in sizes},
            "sizes": {str(n): {k: stats(v) for k, v in r.items()} for n, r in res.items()}}

    # -- leases
    def bench_lease(self):
        """A commit (write to `running`) with job leases on and off, on the
        same Ceph RGW (s3rver ignores conditional writes) in one run: two
        mounts, one each, the same 10-key job, interleaved."""
        log("7. commit with leases on vs off (Ceph RGW)")
        from tests.support.rgw import Rgw
        rgw = Rgw().start()
        try:
            c = rgw.client
            lz, dlz = rgw.unique_bucket("bench-lz"), rgw.unique_bucket("bench-dlz")
            mounts = {}
            for mode in ("on", "off"):
                mnt = self.ws / f"mnt-lease-{mode}"
                cmd = [str(self.bin), "--store=s3", f"--endpoint={rgw.endpoint}",
                       "--path-style", f"--lz-bucket={lz}", f"--dlz-bucket={dlz}",
                       f"--domain={DOMAIN}", f"--dataset=lease_{mode}", f"--user={USER}",
                       f"--cache-dir={self.ws / ('cache-lease-' + mode)}",
                       f"--lease={mode}", "-f", str(mnt)]
                mounts[mode] = self.start(FuseProc("bookmarkfs", cmd, mnt, env=self.env))
                job = mnt / "job"
                job.mkdir()
                write_file(job / ".state.json", json.dumps(state_of(10)).encode())

            def commit(mode):
                def go():
                    fd = os.open(mounts[mode].mnt / "job" / "running", os.O_WRONLY)
                    try:
                        os.write(fd, b"1\n")
                    finally:
                        os.close(fd)
                return timed(go)

            res = {"on": [], "off": []}
            for _ in range(self.cfg["commit_warmup"]):
                for mode in res:
                    commit(mode)
            for rep in range(self.cfg["commit_reps"]):
                for mode in rotate(list(res), rep):
                    res[mode].append(commit(mode))
            for mode in list(mounts):
                self.stop(mounts[mode])
            for b in (lz, dlz):
                for page in c.get_paginator("list_objects_v2").paginate(Bucket=b):
                    for o in page.get("Contents", []):
                        c.delete_object(Bucket=b, Key=o["Key"])
                c.delete_bucket(Bucket=b)
        finally:
            rgw.close()
        on, off = stats(res["on"]), stats(res["off"])
        self.results["lease"] = {"unit": "ms", "server": "Ceph RGW", "keys": 10,
                                 "on": on, "off": off,
                                 "ratio": on["median"] / off["median"]}

    # -- get_or_create
    def populate_history(self, dataset, count):
        """count objects in the DLZ bucket: jobs g<j>, each with several dates."""
        jobs = count if count < 100 else count // 10
        per = count // jobs
        body = json.dumps(state_of(10)).encode()
        keys = [f"{DOMAIN}/{dataset}/upload_date={1700000000 + d * 3600}/{USER}/others/"
                f"g{j}_completed.json" for j in range(jobs) for d in range(per)]
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda k: self.client.put_object(Bucket=DLZ, Key=k, Body=body), keys))
        return jobs

    def bench_goc(self):
        log("3. get_or_create vs boto3 list+get")
        sizes = self.cfg["goc_sizes"]
        mounts, stores, njobs = {}, {}, {}
        for h in sizes:
            ds = f"goc{h}"
            njobs[h] = self.populate_history(ds, h)
            mounts[h] = self.mount_bookmarkfs(ds)
            stores[h] = StateStore(LZ, DLZ, DOMAIN, ds, USER, client=self.client)
        used = {h: 0 for h in sizes}

        def bfs(h):
            j = used[h] % njobs[h]  # a job this mount has not loaded yet
            used[h] += 1
            p = mounts[h].mnt / f"g{j}"
            return timed(lambda: os.stat(p))

        def standin(h):
            j = used[h] % njobs[h]
            data = [None]
            ms = timed(lambda: data.__setitem__(0, stores[h].get_or_create(f"g{j}")))
            assert len(data[0].data) == 10
            return ms

        impls = {"bookmarkfs": bfs, "boto3_list_get": standin}
        res = {h: {k: [] for k in impls} for h in sizes}
        for h in sizes:
            standin(h)  # warm-up (connection, s3rver's directory cache)
            bfs(h)
        for rep in range(self.cfg["reps"]):
            for h in sizes:
                for k in rotate(list(impls), rep):
                    res[h][k].append(impls[k](h))
        for h in sizes:
            self.stop(mounts[h])
        self.results["goc"] = {
            "unit": "ms", "njobs": {str(h): njobs[h] for h in sizes},
            "sizes": {str(h): {k: stats(v) for k, v in r.items()} for h, r in res.items()}}


    # -- history at any scale
    def history_server(self, kind):
        """The S3 server of a history store kind: s3rver, or Ceph RGW."""
        return self.rgw if kind == "rgw" else self.s3

    def history_mount(self, kind, dataset, tag):
        """A fresh mount (its own, empty cache dir) of a history dataset."""
        mnt = self.ws / f"mnt-hist-{kind}-{dataset}-{tag}"
        store = ([f"--store=dir:{self.ws / 'dirstore'}"] if kind == "dir" else
                 ["--store=s3", f"--endpoint={self.history_server(kind).endpoint}",
                  "--path-style"])
        cmd = [str(self.bin), *store, f"--lz-bucket={LZ}", f"--dlz-bucket={DLZ}",
               f"--domain={DOMAIN}", f"--dataset={dataset}", f"--user={USER}",
               f"--cache-dir={self.ws / f'cache-hist-{kind}-{dataset}-{tag}'}",
               "--timeout=300000", "--retry-time=600000", "-f", str(mnt)]
        return self.start(FuseProc("bookmarkfs", cmd, mnt, env=self.env))

    def populate_history_store(self, kind, dataset, n):
        objects = H.generate(n, domain=DOMAIN, dataset=dataset)
        if kind == "dir":
            root = self.ws / "dirstore"
            for bucket, key, body in objects:
                write_file_p(root / bucket / key, body)
        else:
            client = self.history_client(kind)
            with ThreadPoolExecutor(32) as ex:
                list(ex.map(lambda o: client.put_object(Bucket=o[0], Key=o[1], Body=o[2]),
                            objects))
        return objects

    def history_client(self, kind):
        if kind == "s3":
            return self.client
        import boto3
        from botocore.config import Config
        return boto3.client(
            "s3", endpoint_url=self.rgw.endpoint, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))

    def walk_get_or_create(self, dataset, job):
        """The stand-in's get_or_create on the directory store's files: walk
        both buckets under the dataset, pick the newest, read it."""
        root = self.ws / "dirstore"
        listed = []
        for bucket in (DLZ, LZ):
            base = root / bucket
            for dirpath, _, files in os.walk(base / DOMAIN / dataset):
                for f in files:
                    p = os.path.join(dirpath, f)
                    listed.append((bucket, os.path.relpath(p, base),
                                   os.stat(p).st_mtime_ns // 1_000_000))
        best = newest_in(listed, job, DOMAIN, dataset)
        return json.loads((root / best[0] / best[1]).read_bytes()) if best else {}

    def bench_history(self):
        log("6. history: first access and ls MNT against the history's size")
        sizes, reps = self.cfg["history_sizes"], self.cfg["history_reps"]
        fresh_reps = self.cfg["history_fresh_reps"]
        res = {}
        kinds = ["dir", "s3"]
        self.rgw = None
        if shutil.which("radosgw") and not self.a.no_rgw:
            from tests.support.rgw import Rgw
            saved, tempfile.tempdir = tempfile.tempdir, str(self.ws)
            try:
                self.rgw = Rgw().start()
            finally:
                tempfile.tempdir = saved
            c = self.history_client("rgw")
            for b in (LZ, DLZ):
                c.create_bucket(Bucket=b)
            kinds.append("rgw")
        else:
            log("radosgw missing (or --no-rgw): history on Ceph RGW skipped")
        try:
            self.history_kinds(kinds, sizes, reps, fresh_reps, res)
        finally:
            if self.rgw:
                self.rgw.close()
        self.results["history"] = {"unit": "ms", "jobs": 50, "stores": res,
                                   "sizes": [str(n) for n in sizes]}

    def history_kinds(self, kinds, sizes, reps, fresh_reps, res):
        for kind in kinds:
            res[kind] = {}
            for n in sizes:
                ds = f"hist{n}"
                t0 = time.monotonic()
                self.populate_history_store(kind, ds, n)
                log(f"  {kind}, {n:,} objects: stored in {time.monotonic() - t0:.1f} s")
                jobs = iter(H.job_names(50) * 4)
                r = {k: [] for k in ("fresh_access", "fresh_ls", "access", "ls", "standin")}
                for i in range(fresh_reps):
                    m = self.history_mount(kind, ds, f"fa{i}")
                    p = m.mnt / next(jobs)
                    r["fresh_access"].append(timed(lambda: os.stat(p)))
                    self.stop(m)
                    m = self.history_mount(kind, ds, f"fl{i}")
                    r["fresh_ls"].append(timed(lambda: os.listdir(m.mnt)))
                    self.stop(m)
                m = self.history_mount(kind, ds, "warm")
                os.listdir(m.mnt)  # the one listing
                if kind != "dir":
                    standin = StateStore(LZ, DLZ, DOMAIN, ds, USER,
                                         client=self.history_client(kind))
                    goc = standin.get_or_create
                else:
                    def goc(job, ds=ds):
                        return self.walk_get_or_create(ds, job)
                impls = {
                    "access": lambda: timed(lambda p=m.mnt / next(jobs): os.stat(p)),
                    "ls": lambda: timed(lambda: os.listdir(m.mnt)),
                    "standin": lambda: timed(lambda j=next(jobs): goc(j)),
                }
                # the stand-in lists everything: fewer repeats at 50,000 objects
                for rep in range(reps):
                    for k in rotate(list(impls), rep):
                        if k == "standin" and n >= 50000 and rep >= 3:
                            continue
                        r[k].append(impls[k]())
                idx = json.loads((m.mnt / ".status").read_text()).get("index", {})
                self.stop(m)
                res[kind][str(n)] = {k: stats(v) for k, v in r.items()}
                res[kind][str(n)]["index"] = idx
                log(f"  {kind}, {n:,}: access {res[kind][str(n)]['access']['median']:.2f} ms, "
                    f"ls {res[kind][str(n)]['ls']['median']:.2f} ms, fresh access "
                    f"{res[kind][str(n)]['fresh_access']['median']:.0f} ms, stand-in "
                    f"{res[kind][str(n)]['standin']['median']:.0f} ms")

    # -- scale
    def bench_scale(self):
        log("4. scale")
        reps = self.cfg["reps"]
        n, jobs = self.cfg["scale_keys"], self.cfg["scale_jobs"]
        m = self.mount_bookmarkfs("scale")
        rss0 = m.rss_kb()
        (m.mnt / "big").mkdir()
        body = json.dumps(state_of(n)).encode()
        load_ms = timed(lambda: write_file(m.mnt / "big" / ".state.json", body))
        rss1 = m.rss_kb()
        ls_job = [timed(lambda: run_quiet(["ls", str(m.mnt / "big")])) for _ in range(reps)]
        cat_state = [timed(lambda: run_quiet(["cat", str(m.mnt / "big" / ".state.json")]))
                     for _ in range(reps)]
        commit = [timed(lambda: write_file(m.mnt / "big" / "running", b"1\n"))
                  for _ in range(reps)]
        rss2 = m.rss_kb()
        self.stop(m)
        m = self.mount_bookmarkfs("scalejobs")
        for j in range(jobs):
            d = m.mnt / f"job{j:04d}"
            d.mkdir()
            write_file(d / "k", b'{"epoch_time": 156234987}')
            write_file(d / "running", b"1\n")
        names = os.listdir(m.mnt)
        assert len(names) >= jobs, (len(names), jobs)
        ls_root = [timed(lambda: run_quiet(["ls", str(m.mnt)])) for _ in range(reps)]
        self.stop(m)
        # A fresh mount: every job is only in the store.
        m = self.mount_bookmarkfs("scalejobs")
        ls_root_cold = timed(lambda: run_quiet(["ls", str(m.mnt)]))
        self.stop(m)
        self.results["scale"] = {
            "keys": n, "state_bytes": len(body),
            "rss_mb_mounted": rss0["VmRSS"] / 1024,
            "rss_mb_loaded": rss1["VmRSS"] / 1024,
            "rss_mb_after_reads": rss2["VmRSS"] / 1024,
            "hwm_mb": rss2["VmHWM"] / 1024,
            "load_state_json_ms": load_ms,
            "ls_job_ms": stats(ls_job), "cat_state_json_ms": stats(cat_state),
            "commit_ms": stats(commit),
            "jobs": jobs, "ls_root_ms": stats(ls_root), "ls_root_cold_ms": ls_root_cold}

    # -- parallel
    def bench_parallel(self):
        log("5. parallel writers")
        targets = {"bookmarkfs": self.bfs_keys.mnt,
                   "bookmarkfs_fuse_loop": self.targets["bookmarkfs_fuse_loop"].parent}
        if self.tools["passthrough_ll"]:
            targets["passthrough_ll"] = self.targets["passthrough_ll"].parent
        maxp = max(self.cfg["parallel"])
        for base in targets.values():
            for i in range(maxp):
                d = base / f"par{i}"
                if not d.exists():
                    d.mkdir()
                subprocess.run(self.keyloop("write", d, self.cfg["nkeys"]), check=True,
                               stdout=subprocess.DEVNULL)
        iters = self.cfg["par_iters"]
        res = {p: {t: [] for t in targets} for p in self.cfg["parallel"]}
        for rep in range(self.cfg["key_reps"]):
            for p in self.cfg["parallel"]:
                for t in rotate(list(targets), rep):
                    start_at = time.monotonic_ns() + 100_000_000
                    procs = [subprocess.Popen(self.keyloop("write", targets[t] / f"par{i}",
                                                           iters, start_at),
                                              stdout=subprocess.PIPE, text=True)
                             for i in range(p)]
                    outs = []
                    for pr in procs:
                        out, _ = pr.communicate(timeout=600)
                        if pr.returncode != 0:
                            raise RuntimeError(f"keyloop failed on {t}")
                        outs.append(json.loads(out))
                    span = (max(o["end_ns"] for o in outs) - min(o["start_ns"] for o in outs))
                    res[p][t].append(sum(o["ops"] for o in outs) / (span / 1e9))
        self.results["parallel"] = {
            "unit": "writes/s", "iters_per_writer": iters,
            "writers": {str(p): {t: stats(v) for t, v in r.items()} for p, r in res.items()}}

    # -- goals
    def goals(self):
        g = []
        r = self.results

        def add(name, value, limit, unit, note=""):
            g.append({"goal": name, "value": value, "limit": limit, "unit": unit,
                      "met": None if value is None else value <= limit, "note": note})
        kw = r.get("keys", {}).get("write", {})
        med = {k: v["median"] for k, v in kw.items()}
        if "bookmarkfs" in med:
            add("key write / passthrough_ll", med["bookmarkfs"] / med["passthrough_ll"]
                if "passthrough_ll" in med else None, 1.0, "x")
            add("key write / s3fs (<= 1/50: 50x faster)", med["bookmarkfs"] / med["s3fs"]
                if "s3fs" in med else None, 1 / 50, "x")
        c = r.get("commit", {}).get("sizes", {})
        if c:
            one = c.get("1000")
            add("1,000-key commit / raw PUT", one["bookmarkfs"]["median"] /
                one["raw_put"]["median"] if one else None, 1.3, "x")
            big = c.get("100000")
            add("100,000-key commit", big["bookmarkfs"]["median"] / 1000 if big else None,
                1.0, "s", "" if big else "not measured (--quick)")
        s = r.get("scale")
        if s:
            add(f"RSS with {s['keys']:,} keys", s["hwm_mb"], 100, "MB",
                "" if s["keys"] >= 100000 else "fewer keys than the goal's 100,000")
        q = r.get("goc", {}).get("sizes", {})
        if q:
            top = q.get("10000")
            add("get_or_create over 10,000 objects / boto3 list+get",
                top["bookmarkfs"]["median"] / top["boto3_list_get"]["median"] if top else None,
                1.5, "x", "" if top else "not measured (--quick)")
        h = r.get("history", {}).get("stores", {})
        for kind, label in (("dir", "dir store"), ("s3", "S3 on s3rver"),
                            ("rgw", "S3 on Ceph RGW")):
            if kind == "rgw" and kind not in h:
                continue
            sz = h.get(kind, {})
            lo, hi = sz.get("1000"), sz.get("50000")
            for what, name in (("access", "first access"), ("ls", "`ls MNT`")):
                add(f"{name} after one listing, 50,000 / 1,000 objects ({label})",
                    hi[what]["median"] / lo[what]["median"] if lo and hi else None, 2.0, "x",
                    "" if lo and hi else "not measured (--quick)")
        le = r.get("lease")
        if le:
            add("commit with leases on / off (RGW)", le["ratio"], 1.1, "x", "")
        r["goals"] = g

    def run(self):
        t0 = time.monotonic()
        only = set(self.a.only.split(",")) if self.a.only else set(SECTIONS)
        try:
            self.setup()
            if only & {"keys", "commit", "parallel"}:
                self.targets = self.key_targets()
            if "keys" in only:
                self.bench_keys()
            if "commit" in only:
                self.bench_commit()
            if "goc" in only:
                self.bench_goc()
            if "scale" in only:
                self.bench_scale()
            if "parallel" in only:
                self.bench_parallel()
            if "history" in only:
                self.bench_history()
            if "lease" in only:
                self.bench_lease()
        finally:
            self.teardown()
        self.results["loadavg_end"] = os.getloadavg()
        self.results["duration_s"] = round(time.monotonic() - t0, 1)
        self.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        self.goals()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2) + "\n")
        table = plot.table(self.results)
        (self.out / "table.md").write_text(table)
        print(table)
        png = plot.plot(self.results, self.out)
        plot.plot_history(self.results, self.out)
        log(f"wrote {self.out / 'results.json'}, table.md" + (f", {png.name}" if png else ""))
        return 0


def main(argv):
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    ap.add_argument("--out", default=str(REPO / "bench-results"),
                    help="output directory (default: bench-results/)")
    ap.add_argument("--reps", type=int, default=0, help="repeats (default 5; quick 2)")
    ap.add_argument("--only", default="",
                    help="comma-separated subset of " + ",".join(SECTIONS))
    ap.add_argument("--tmpfs", default=None, help="a tmpfs directory to work in")
    ap.add_argument("--no-s3fs", action="store_true", help="skip s3fs")
    ap.add_argument("--no-rgw", action="store_true",
                    help="history: skip Ceph RGW (run only on the dir store and s3rver)")
    args = ap.parse_args(argv)
    # SIGTERM (kill, a CI time-out) unwinds like Ctrl-C: the teardown stops
    # the daemons and s3rver and unmounts instead of leaving them behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not args.quick:
        # The peers it compares against (s3fs, libfuse3-dev's examples,
        # gnuplot, s3rver, RGW) are installed, not skipped; --quick, which
        # the test suite runs, takes what is there.
        subprocess.run([str(REPO / "scripts" / "deps"), "--bench"], check=True)
    return Bench(args).run()
