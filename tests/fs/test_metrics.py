"""--metrics (README, "Metrics"): a real Prometheus (Debian's) scrapes a
mount on 127.0.0.1, and what it stored is compared with what the store
holds (boto3) and what the test did; promtool checks the exposition and the
README's alert rule. Prometheus runs with its own config and data dir on a
port of its own, and is stopped by its PID."""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.faults import EndpointStore, mount_once, sh_write
from tests.support.mount import DATASET, DOMAIN, LEASES, LZ, USER, DirStore, Mount

REPO = Path(__file__).resolve().parents[2]
WEIRD = 'hourly "eu" \\ job'  # a label value that needs escaping


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def readme_yaml_blocks():
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Metrics"):text.index("### Why the high-level")]
    return re.findall(r"```yaml\n(.*?)```", section, re.S)


def need(tool):
    if not shutil.which(tool):
        pytest.fail(f"{tool} is not installed (scripts/deps --test installs prometheus)")


class Prometheus:
    """Debian's prometheus with a private config and data dir."""

    def __init__(self, tmp, scrape_config, rules):
        self.dir = Path(tmp)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (self.dir / "rules.yml").write_text(rules)
        cfg = "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n" \
              "rule_files: [%s]\n" % json.dumps(str(self.dir / "rules.yml"))
        (self.dir / "prometheus.yml").write_text(cfg + scrape_config)
        self.proc = None

    def __enter__(self):
        self.log = open(self.dir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.dir / "prometheus.log").read_text()
            try:
                if http(self.url("/-/ready"))[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus did not get ready")

    def __exit__(self, *exc):
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, path, **params):
        status, _, body = http(self.url(path + "?" + urllib.parse.urlencode(params)))
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", body
        return doc["data"]

    def query(self, expr):
        """{frozenset(labels minus the target's): value}"""
        out = {}
        for r in self.api("/api/v1/query", query=expr)["result"]:
            labels = {k: v for k, v in r["metric"].items()
                      if k not in ("instance", "job", "__name__")}
            out[frozenset(labels.items())] = float(r["value"][1])
        return out

    def wait_for(self, expr, want, timeout=30):
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.query(expr)
            if got == want:
                return
            time.sleep(0.5)
        assert got == want, (expr, got, want)


def L(**kw):
    return frozenset(kw.items())


@pytest.fixture
def proxy(s3server):
    with FaultProxy(s3server.endpoint) as p:
        yield p


def test_prometheus_scrapes_a_mount(s3server, proxy, tmp_path):
    need("prometheus")
    need("promtool")
    port = free_port()
    store = EndpointStore(s3server, proxy.endpoint, retries=3, retry_time=5000,
                          timeout=5000)
    # fstab form of the option
    with Mount(store, tmp_path / "mnt", extra=["-o", f"metrics=127.0.0.1:{port}"]) as m:
        nightly, weird = m.path / "nightly-sales", m.path / WEIRD
        nightly.mkdir()
        weird.mkdir()
        (nightly / "last_epoch").write_text("156234987")
        assert sh_write(nightly / "running").returncode == 0
        assert sh_write(nightly / "completed").returncode == 0
        (weird / "offset").write_text("7")
        proxy.script(["500"])  # one retry, then it lands
        assert sh_write(weird / "completed").returncode == 0
        # denied: not retried, the write fails (the state's PUT; completed
        # released the job's lease, which the write takes again first)
        proxy.match(lambda method, path: method == "PUT" and LEASES not in path, ["403"])
        assert sh_write(nightly / "running").returncode != 0
        with pytest.raises(OSError) as e:
            with open(weird / "offset", "w") as f:
                f.write("{not json")
        assert e.value.errno == 22
        fd = os.open(nightly / "blob", os.O_WRONLY | os.O_CREAT)
        try:
            data = b'"' + b"x" * (16 * 1024 * 1024 - 1)  # up to the limit: fine
            while data:
                data = data[os.write(fd, data):]
            with pytest.raises(OSError) as e:
                os.write(fd, b'x"')  # beyond it
            assert e.value.errno == 27  # EFBIG
        except BaseException:
            os.close(fd)
            raise
        with pytest.raises(OSError) as e:
            os.close(fd)  # what was written before is not JSON either
        assert e.value.errno == 22

        status, headers, text = http(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        r = subprocess.run(["promtool", "check", "metrics"], input=text,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert http(f"http://127.0.0.1:{port}/other")[0] == 404
        assert http(f"http://127.0.0.1:{port}/metrics", method="POST")[0] == 405
        assert http(f"http://127.0.0.1:{port}/metrics", method="HEAD")[0] == 200

        # What the store holds, read with boto3: the expected counts and times.
        keys = [o["Key"] for o in s3server.client.list_objects_v2(
            Bucket=LZ, Prefix=f"{DOMAIN}/{DATASET}/")["Contents"]
            if not o["Key"].startswith(LEASES)]  # job leases: not uploads
        uploads, last = {}, {}
        for k in keys:
            mm = re.fullmatch(rf"{DOMAIN}/{DATASET}/upload_date=(\d+)/{USER}/others/"
                              r"(.*)_(running|completed)\.json", k)
            assert mm, k
            epoch, job, kind = int(mm[1]), mm[2], mm[3]
            uploads[(job, kind)] = uploads.get((job, kind), 0) + 1
            last[(job, kind)] = max(last.get((job, kind), 0), epoch)
        assert sum(uploads.values()) == 3
        journal = glob.glob(os.path.join(store.cache_dir, "*", "journal"))
        assert len(journal) == 1

        scrape, rules = readme_yaml_blocks()
        rules_file = tmp_path / "readme-rules.yml"
        rules_file.write_text(rules)
        r = subprocess.run(["promtool", "check", "rules", str(rules_file)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        with Prometheus(tmp_path / "prom",
                        scrape.replace("127.0.0.1:9464", f"127.0.0.1:{port}")
                              .replace("30s", "1s"), rules) as prom:
            prom.wait_for("up", {L(): 1.0})
            jobs = ("nightly-sales", WEIRD)
            prom.wait_for("bookmarkfs_uploads_total", {
                L(etl_job=j, kind=k): float(uploads.get((j, k), 0))
                for j in jobs for k in ("running", "completed")})
            assert prom.query("bookmarkfs_job_last_upload_timestamp_seconds") == {
                L(etl_job=j, kind=k): float(t) for (j, k), t in last.items()}
            ages = prom.query("bookmarkfs_job_last_upload_age_seconds")
            assert set(ages) == {L(etl_job=j, kind=k) for j, k in last}
            assert all(0 <= a <= time.time() - min(last.values()) + 1 for a in ages.values())
            failures = prom.query("bookmarkfs_upload_failures_total > 0")
            assert failures == {L(etl_job="nightly-sales", kind="running",
                                  reason="denied"): 1.0}
            assert prom.query("bookmarkfs_refused_writes_total > 0") == {
                L(etl_job=WEIRD, reason="invalid_json"): 1.0,
                L(etl_job="nightly-sales", reason="too_large"): 1.0,
                L(etl_job="nightly-sales", reason="invalid_json"): 1.0}
            assert prom.query("bookmarkfs_upload_retries_total") == {L(): 1.0}
            assert prom.query("bookmarkfs_upload_duration_seconds_count") == {
                L(kind=k): float(sum(n for (_, kk), n in uploads.items() if kk == k))
                for k in ("running", "completed")}
            assert prom.query("bookmarkfs_jobs_loaded") == {L(): 2.0}
            assert prom.query("bookmarkfs_journal_bytes") == {
                L(): float(os.stat(journal[0]).st_size)}
            groups = prom.api("/api/v1/rules")["groups"]
            rule = groups[0]["rules"][0]
            assert (rule["name"], rule["health"], rule["state"]) == \
                ("BookmarkfsJobNotCompleted", "ok", "inactive")
    assert not m.path.is_mount()


def test_readme_alert_fires_after_26_hours_without_a_completed_upload(tmp_path):
    """promtool's rule unit test on the README's rule: a job whose last
    completed upload stays at t=0 alerts after 26 h (+ `for`), not before;
    one that completes every day never does."""
    need("promtool")
    _, rules = readme_yaml_blocks()
    (tmp_path / "rules.yml").write_text(rules)
    (tmp_path / "test.yml").write_text(f"""\
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'bookmarkfs_job_last_upload_timestamp_seconds{{etl_job="stuck",kind="completed"}}'
        values: '0x1700'
      - series: 'bookmarkfs_job_last_upload_timestamp_seconds{{etl_job="daily",kind="completed"}}'
        values: '0x1439 86400x300'
    alert_rule_test:
      - eval_time: 25h
        alertname: BookmarkfsJobNotCompleted
        exp_alerts: []
      - eval_time: 27h
        alertname: BookmarkfsJobNotCompleted
        exp_alerts:
          - exp_labels: {{severity: warning, etl_job: stuck, kind: completed}}
            exp_annotations:
              summary: "ETL job stuck has not completed for 1d 3h 0m 0s"
""")
    r = subprocess.run(["promtool", "test", "rules", "test.yml"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_bad_metrics_addresses_are_refused_before_mounting(tmp_path):
    store = DirStore(tmp_path / "store")
    for bad in ("9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", ":9464",
                "127.0.0.1:http"):
        r = mount_once(store, tmp_path / "mnt", extra=[f"--metrics={bad}"])
        assert r.returncode == 2, (bad, r.stderr)
        assert r.stderr == f"bookmarkfs: invalid --metrics '{bad}': expected " \
                           "ADDRESS:PORT, e.g. 127.0.0.1:9464\n"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        addr = "127.0.0.1:%d" % busy.getsockname()[1]
        r = mount_once(store, tmp_path / "mnt", extra=[f"--metrics={addr}"])
    assert r.returncode == 1
    assert r.stderr == f"bookmarkfs: --metrics: cannot listen on {addr}: Address " \
                       "already in use\n"
    assert not (tmp_path / "mnt").is_mount()


def test_metrics_are_off_by_default_and_end_with_the_mount(tmp_path):
    """Without --metrics nothing listens; with it, a job that a fresh mount
    loads has the time of the object it loaded; after unmount the port is
    closed."""
    port = free_port()
    store = DirStore(tmp_path / "store")
    with Mount(store, tmp_path / "mnt") as m:
        (m.path / "j").mkdir()
        (m.path / "j" / "k").write_text("1")
        assert sh_write(m.path / "j" / "completed").returncode == 0
        with pytest.raises(OSError):
            http(f"http://127.0.0.1:{port}/metrics")
    (obj,) = [p for p in (tmp_path / "store" / LZ).rglob("j_completed.json")]
    with Mount(store, tmp_path / "mnt", extra=[f"--metrics=127.0.0.1:{port}"]) as m:
        # Not loaded yet: no series of the job (README, "Metrics").
        assert 'etl_job="j"' not in http(f"http://127.0.0.1:{port}/metrics")[2]
        assert sorted(os.listdir(m.path)) == [".status", "j"]  # listing loads no job
        assert 'etl_job="j"' not in http(f"http://127.0.0.1:{port}/metrics")[2]
        os.stat(m.path / "j")  # loads the job
        assert (m.path / "j" / "k").read_text() == "1\n"
        status, _, text = http(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        line = 'bookmarkfs_job_last_upload_timestamp_seconds{etl_job="j",kind="completed"} '
        assert f"{line}{int(obj.stat().st_mtime)}\n" in text, text
        assert 'bookmarkfs_uploads_total{etl_job="j",kind="completed"} 0\n' in text
        # .state.json writes refused: by what they are, not by where.
        for bad in ("echo 1 > .state.json", "echo '{bad' > .state.json",
                    "printf '{\"a\": ' > .state.json", "echo nope > k"):
            subprocess.run(["bash", "-c", bad], cwd=m.path / "j", capture_output=True)
        assert json.loads((m.path / "j" / ".state.json").read_text()) == {"k": 1}
        _, _, text = http(f"http://127.0.0.1:{port}/metrics")
        refused = dict(re.findall(
            r'bookmarkfs_refused_writes_total\{etl_job="j",reason="(\w+)"\} (\d+)\n', text))
        assert refused == {"invalid_json": "3", "not_an_object": "1", "too_large": "0",
                           "journal": "0"}, text
    with pytest.raises(OSError):
        http(f"http://127.0.0.1:{port}/metrics")
