"""The table (Markdown) and the plot (PNG, gnuplot) of a bench run."""
import shutil
import subprocess
from pathlib import Path


def fmt(v, digits=3):
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def mmm(s):
    """median (min–max)"""
    return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})"


def _load(la):
    return "?" if not la else " ".join(f"{x:.1f}" for x in la)


def table(r):
    m = r["machine"]
    out = [f"Machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}, "
           f"{m['mem_gb']} GB; libfuse {m['libfuse']}; {m['s3fs'] or 's3fs: none'}; "
           f"Python {m['python']}. Run: {r.get('finished', '?')}, "
           f"{r.get('duration_s', '?')} s, {r['config']['reps']} interleaved repeats "
           f"({r['config']['key_reps']} for key and parallel writes, "
           f"{r['config'].get('commit_reps', r['config']['reps'])} for commits of up to "
           f"1,000 keys and {r['config'].get('commit_reps_large', r['config'].get('commit_reps'))}"
           " for larger ones, after "
           f"{r['config'].get('commit_warmup', 1)} warm-up rounds)"
           f"{' (--quick)' if r['quick'] else ''}; load average at start / end "
           f"{_load(r.get('loadavg_start'))} / {_load(r.get('loadavg_end'))}. "
           "Cells: median (min–max).", ""]
    k = r.get("keys")
    if k:
        out += ["**1. Key write / read** (µs per open+write+close / open+read+close; "
                f"{k['iters']} ops per repeat, s3fs {k['s3fs_iters']})", "",
                "| target | write µs | read µs | write vs bookmarkfs | daemon CPU µs per write |",
                "|---|---|---|---|---|"]
        bw = k["write"].get("bookmarkfs", {}).get("median")
        cpu = k.get("daemon_cpu_us_per_write", {})
        for t in k["write"]:
            ratio = k["write"][t]["median"] / bw if bw else None
            out.append(f"| {t.replace('_fuse_loop', ' --fuse-loop')} | {mmm(k['write'][t])} | "
                       f"{mmm(k['read'][t])} | {fmt(ratio)}x | {fmt(cpu.get(t))} |")
        out.append("")
    c = r.get("commit")
    if c:
        out += ["**2. Commit** (ms: write to `running` / one signed PUT of the same bytes "
                "on a kept-alive connection / StateStore stand-in `update()` on boto3)", "",
                "| keys | bytes | bookmarkfs | raw PUT | stand-in (boto3) | bookmarkfs / PUT |",
                "|---|---|---|---|---|---|"]
        for n, s in c["sizes"].items():
            out.append(f"| {int(n):,} | {int(c['bytes'][n]):,} | {mmm(s['bookmarkfs'])} | "
                       f"{mmm(s['raw_put'])} | {mmm(s['standin_boto3'])} | "
                       f"{fmt(s['bookmarkfs']['median'] / s['raw_put']['median'])}x |")
        out.append("")
    le = r.get("lease")
    if le:
        out += ["**7. Commit with job leases** (ms: write to `running`, 10 keys, on "
                f"{le['server']}, leases on and off in one run)", "",
                "| leases on | leases off | on / off |", "|---|---|---|",
                f"| {mmm(le['on'])} | {mmm(le['off'])} | {fmt(le['ratio'])}x |", ""]
    g = r.get("goc")
    if g:
        out += ["**3. get_or_create** (ms, first access to a job; history objects under "
                "the dataset)", "",
                "| objects | bookmarkfs (stat MNT/job) | boto3 list+get (stand-in) | ratio |",
                "|---|---|---|---|"]
        for n, s in g["sizes"].items():
            out.append(f"| {int(n):,} | {mmm(s['bookmarkfs'])} | {mmm(s['boto3_list_get'])} | "
                       f"{fmt(s['bookmarkfs']['median'] / s['boto3_list_get']['median'])}x |")
        out.append("")
    s = r.get("scale")
    if s:
        out += ["**4. Scale**", "", "| measure | value |", "|---|---|",
                f"| keys in one job / `.state.json` bytes | {s['keys']:,} / {s['state_bytes']:,} |",
                f"| daemon RSS: mounted / loaded / after reads (peak) | "
                f"{fmt(s['rss_mb_mounted'])} / {fmt(s['rss_mb_loaded'])} / "
                f"{fmt(s['rss_mb_after_reads'])} ({fmt(s['hwm_mb'])}) MB |",
                f"| write `.state.json` ({s['keys']:,} keys) | {fmt(s['load_state_json_ms'])} ms |",
                f"| `ls` of the job | {mmm(s['ls_job_ms'])} ms |",
                f"| `cat .state.json` | {mmm(s['cat_state_json_ms'])} ms |",
                f"| commit (`running`) | {mmm(s['commit_ms'])} ms |",
                f"| `ls` of the root, {s['jobs']:,} jobs loaded | {mmm(s['ls_root_ms'])} ms |",
                f"| `ls` of the root, fresh mount (jobs only in S3) | "
                f"{fmt(s['ls_root_cold_ms'])} ms |", ""]
    p = r.get("parallel")
    if p:
        targets = list(next(iter(p["writers"].values())))
        out += [f"**5. Parallel writers** (key writes/s, all processes together; each on "
                f"its own job, {p['iters_per_writer']} writes each)", "",
                "| writers | " + " | ".join(t.replace("_fuse_loop", " --fuse-loop")
                                              for t in targets) + " |",
                "|---|" + "---|" * len(targets)]
        for n, s in p["writers"].items():
            out.append(f"| {n} | " + " | ".join(mmm(s[t]) for t in targets) + " |")
        out.append("")
    h = r.get("history")
    if h:
        standin = {"dir": "stand-in on the files (Python walk + read)",
                   "s3": "stand-in (boto3 list + get)", "rgw": "stand-in (boto3 list + get)"}
        for kind, label in (("dir", "directory store"), ("s3", "S3 (s3rver)"),
                            ("rgw", "S3 (Ceph RGW)")):
            sz = h["stores"].get(kind)
            if not sz:
                continue
            out += [f"**6. History, {label}** (ms; {h['jobs']} jobs, a running and a "
                    "completed object per run, 2% of them still in the LZ, decoys; "
                    "fresh: a mount with an empty cache dir; after one listing: a mount "
                    "that listed the dataset once, first access to a job it has not loaded)",
                    "",
                    "| objects | fresh: first access | fresh: `ls MNT` | after one listing: "
                    f"first access | after one listing: `ls MNT` | {standin[kind]} |",
                    "|---|---|---|---|---|---|"]
            for n in h["sizes"]:
                s = sz.get(n)
                if s:
                    out.append(f"| {int(n):,} | {mmm(s['fresh_access'])} | {mmm(s['fresh_ls'])}"
                               f" | {mmm(s['access'])} | {mmm(s['ls'])} | {mmm(s['standin'])} |")
            out.append("")
    if r.get("goals"):
        out += ["**Goals** (ratios from this run)", "", "| goal | value | limit | met |",
                "|---|---|---|---|"]
        for x in r["goals"]:
            met = "—" if x["met"] is None else ("yes" if x["met"] else "**no**")
            note = f" ({x['note']})" if x["note"] else ""
            out.append(f"| {x['goal']} | {fmt(x['value'])} {x['unit']} | "
                       f"{fmt(x['limit'])} {x['unit']} | {met}{note} |")
        out.append("")
    return "\n".join(out) + "\n"


def _dat(path, rows):
    path.write_text("".join(" ".join(str(c) for c in row) + "\n" for row in rows))


def plot_history(r, out: Path):
    """history.png: first access and ls MNT against the history's size,
    log-log, one panel per store; None without gnuplot or the section."""
    h = r.get("history")
    if not h or not shutil.which("gnuplot"):
        return None
    d = out / "plot-data"
    d.mkdir(exist_ok=True)
    names = {"fresh_access": "fresh mount: first access", "fresh_ls": "fresh mount: ls MNT",
             "access": "after one listing: first access", "ls": "after one listing: ls MNT",
             "standin": "stand-in get-or-create"}
    panels = []
    for kind, label in (("dir", "directory store"), ("s3", "S3 (s3rver)"),
                        ("rgw", "S3 (Ceph RGW)")):
        sz = h["stores"].get(kind)
        if not sz:
            continue
        series = []
        for impl, title in names.items():
            rows = [[n, sz[n][impl]["median"], sz[n][impl]["min"], sz[n][impl]["max"]]
                    for n in h["sizes"] if n in sz]
            _dat(d / f"history-{kind}-{impl}.dat", rows)
            series.append(f'"{d}/history-{kind}-{impl}.dat" using 1:2:3:4 with yerrorlines '
                          f'lw 2 title "{title}"')
        panels.append(f'set title "{label}: ms against objects of history (log-log)"\n'
                      'set logscale xy\nset xlabel "objects"\nset ylabel "ms"\n'
                      'set key top left\nplot ' + ", ".join(series) + "\n")
    script = [f'set terminal pngcairo size {700 * len(panels)},560 font ",10"',
              f'set output "{out}/history.png"',
              f'set multiplot layout 1,{len(panels)} title "bookmarkfs: history at any scale'
              + (' (--quick)' if r["quick"] else '') + '"', "set grid"] + panels + [
              "unset multiplot"]
    gp = out / "history.gp"
    gp.write_text("\n".join(script) + "\n")
    subprocess.run(["gnuplot", str(gp)], check=True)
    return out / "history.png"


def plot(r, out: Path):
    """Writes plot.png (2x2 panels) with gnuplot; None when gnuplot is missing."""
    if not shutil.which("gnuplot"):
        return None
    d = out / "plot-data"
    d.mkdir(exist_ok=True)
    panels = []
    k = r.get("keys")
    if k:
        rows = [[t.replace("_", "-"), k["write"][t]["median"], k["write"][t]["min"],
                 k["write"][t]["max"], k["read"][t]["median"], k["read"][t]["min"],
                 k["read"][t]["max"]] for t in k["write"]]
        _dat(d / "keys.dat", rows)
        panels.append(
            'set title "1. key write / read (us per op, log)"\n'
            'set logscale y\nset style data histogram\n'
            'set style histogram errorbars gap 1 lw 1\nset style fill solid 0.7 border -1\n'
            'set ylabel "us"\nset xtics rotate by -20\n'
            f'plot "{d}/keys.dat" using 2:3:4:xtic(1) title "write", '
            '"" using 5:6:7 title "read"\n'
            'unset logscale y\nunset xtics\nset xtics\nset style data lines\n')

    def lines(section, key, impls, title, xlabel, ylabel, logx=True, logy=True, extra=""):
        sec = r.get(section)
        if not sec:
            return
        series = []
        for impl in impls:
            rows = [[n, v[impl]["median"], v[impl]["min"], v[impl]["max"]]
                    for n, v in sec[key].items() if impl in v]
            if rows:
                _dat(d / f"{section}-{impl}.dat", rows)
                series.append(f'"{d}/{section}-{impl}.dat" using 1:2:3:4 with yerrorlines '
                              f'lw 2 title "{impl.replace("_", " ")}"')
        panels.append(
            f'set title "{title}"\n' + ("set logscale x\n" if logx else "") +
            ("set logscale y\n" if logy else "set yrange [0:*]\n") + extra +
            f'set xlabel "{xlabel}"\nset ylabel "{ylabel}"\n'
            f'set key top left\nplot ' + ", ".join(series) + "\n"
            "unset logscale x\nunset logscale y\nunset xlabel\nset key default\n"
            "set autoscale\nset xtics autofreq\n")

    lines("commit", "sizes", ["bookmarkfs", "raw_put", "standin_boto3"],
          "2. commit (ms, log-log)", "keys in the state", "ms")
    lines("goc", "sizes", ["bookmarkfs", "boto3_list_get"],
          "3. get-or-create (ms, log-log)", "objects of history", "ms")
    p = r.get("parallel")
    if p:
        targets = list(next(iter(p["writers"].values())))
        lines("parallel", "writers", targets, "5. parallel key writes (writes/s)",
              "writer processes", "writes/s", logx=False, logy=False,
              extra="set xtics (1, 2, 4)\nset xrange [0.5:4.5]\n")
    script = ['set terminal pngcairo size 1400,1000 font ",10"',
              f'set output "{out}/plot.png"',
              'set multiplot layout 2,2 title "bookmarkfs bench: '
              f'{r["machine"]["nproc"]} CPUs, {r["machine"]["cpu"]}, Linux '
              f'{r["machine"]["kernel"]}' + (' (--quick)' if r["quick"] else '') + '"',
              "set grid"] + panels + ["unset multiplot"]
    gp = out / "plot.gp"
    gp.write_text("\n".join(script) + "\n")
    subprocess.run(["gnuplot", str(gp)], check=True)
    return out / "plot.png"
