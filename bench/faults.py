"""Fault injection for ``featx extract``: kill -9 at random points and at exact points of the
layout-2 commit (inside a shard write, inside the index swap, after the index rename), Ctrl-C,
a second writer, a full disk and a zoo of bad inputs; prints a reliability table.

    python bench/faults.py                      # 24 kill -9 trials + the other faults + the issue's check
    python bench/faults.py --trials 40 --seed 3
    python bench/faults.py --skip-issue-check   # without the 600-image run on the default backbone

Every kill trial works on a cache that already holds a large "filler" set (whose rows a commit
must leave bit-identical), kills the CLI with SIGKILL at a point chosen by the trial's kind
(a layout-2 commit only writes what it adds, so the exact-point kinds aim inside it), checks that the cache still opens with h5py, re-runs the same command
to completion and compares the result with an uninterrupted run: every row present exactly once,
fp32 features within 1e-5, the filler rows bit-identical.

The input generators and checks live in tests/support/faults.py, shared with tests/test_reliability.py
and tests/test_bad_inputs.py; this script needs the full chest X-ray set (FEATX_SHARED_DATA or ../shared/data).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from featx.cache import copy_cache, lock_path  # noqa: E402  (a layout-2 cache is the index and its shards)

# The generators and checks are shared with the tests (tests/support/faults.py).
from tests.support import SHARED, TINY_SET, extract_argv as _extract_argv  # noqa: E402
from tests.support.faults import (  # noqa: E402
    FILLER_SET,
    KILL_POINTS,
    killing_argv,
    compare,
    kill_during,
    make_bad_inputs,
    make_chest_folder as _make_chest_folder,
    make_filler_cache,
    n_journal_records,
    opens_with_h5py,
    read_set,
    sigint_default,
    trial_ok,
)

CHEST = SHARED / "chest-xray-pneumonia-224"   # the full set: the trials use up to 600 X-rays
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


def make_chest_folder(dst: Path, n: int, bad: bool = True, offset: int = 0):
    return _make_chest_folder(dst, n, bad=bad, offset=offset, chest=CHEST)


def extract_argv(src, cache, *extra) -> list[str]:
    return _extract_argv(src, cache, *extra, batch_size=16, python=PY)


def run(argv, timeout=600, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


# ----------------------------------------------------------------------------------------------
# The bench


def kill_trials(work: Path, n_trials: int, n_images: int, seed: int, log=print) -> dict:
    rng = random.Random(seed)
    src = work / "src"
    make_chest_folder(src, n_images)
    base = work / "base.h5"
    make_filler_cache(base, rows=6000, dim=512)
    filler = read_set(base, FILLER_SET)
    ref_cache = work / "ref.h5"
    copy_cache(base, ref_cache)
    t = time.time()
    r = run(extract_argv(src, ref_cache))
    horizon = time.time() - t
    assert r.returncode == 0, r.stderr
    ref = read_set(ref_cache, TINY_SET)
    ref = {"ids": [i for i, o in zip(ref["ids"], ref["ok"]) if o], "X": ref["X"][ref["ok"]],
           "failures": len(ref["failures"])}
    # how long one commit of this cache takes, to spread kills over it
    t = time.time()
    probe = work / "probe.h5"
    copy_cache(ref_cache, probe)
    from featx import cache as C
    C.Journal(probe).append(C.BatchRecord(failures=[("x", "probe", "source")]))
    C.commit(probe)
    commit_s = time.time() - t
    log(f"uninterrupted run: {horizon:.1f} s, {len(ref['ids'])} rows, {ref['failures']} failures; "
        f"one commit of this cache {commit_s * 1000:.0f} ms")
    # the last three are exact points of the layout-2 commit, hit by the process itself (tests.support.faults.arm)
    kinds = ["time", "records", "commit", "recovery-commit", *KILL_POINTS]
    stats = {"trials": 0, "passed": 0, "faults": {}, "rows_lost": 0, "dup_rows": 0, "unopenable": 0,
             "commit_hits": 0, "max_diff": 0.0, "rerun_failed": 0}
    for k in range(n_trials):
        kind = kinds[k % len(kinds)]
        cache = work / f"t{k}.h5"
        copy_cache(base, cache)
        argv = extract_argv(src, cache)
        faults = []
        if kind in KILL_POINTS:
            t = time.time()
            r = run(killing_argv(argv, kind))
            killed = r.returncode == -signal.SIGKILL
            faults.append({"killed": killed, "in_commit": killed, "records": n_journal_records(cache),
                           "seconds": time.time() - t})
        elif kind == "recovery-commit":
            faults.append(kill_during(argv, cache, "records", rng))
            faults.append(kill_during(argv, cache, "commit", rng, commit_s=commit_s))  # the re-run's recovery commit
        else:
            faults.append(kill_during(argv, cache, kind, rng, horizon=horizon * 1.05, commit_s=commit_s))
        opened = all(opens_with_h5py(cache) for _ in [0])
        done = run(argv)
        c = compare(cache, ref, filler=filler)
        ok = opened and done.returncode == 0 and trial_ok(c, ref["failures"])
        stats["trials"] += 1
        stats["passed"] += ok
        for f in faults:
            if f["killed"]:
                stats["faults"][kind] = stats["faults"].get(kind, 0) + 1
                stats["commit_hits"] += f["in_commit"]
        stats["rows_lost"] += c["missing"]
        stats["dup_rows"] += c["duplicated"]
        stats["unopenable"] += not opened
        stats["rerun_failed"] += done.returncode != 0
        stats["max_diff"] = max(stats["max_diff"], c["max_diff"])
        log(f"trial {k + 1:2d} {kind:15s} " + ", ".join(
            f"killed={f['killed']} at {f['seconds']:.2f}s records={f['records']} in_commit={f['in_commit']}" for f in faults)
            + f" -> rerun rc={done.returncode} rows={c['rows']} missing={c['missing']} dup={c['duplicated']} "
              f"maxdiff={c['max_diff']:.1e} filler_equal={c.get('filler_equal')} {'OK' if ok else 'FAIL'}")
        for p in work.glob(f"t{k}.h5*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return stats


def sigint_trials(work: Path, n: int, seed: int, log=print) -> dict:
    rng = random.Random(seed)
    src = work / "sigint-src"
    make_chest_folder(src, 120, bad=False, offset=300)
    out = {"trials": 0, "passed": 0}
    for k in range(n):
        cache = work / f"s{k}.h5"
        proc = subprocess.Popen(extract_argv(src, cache), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=sigint_default)
        want = rng.randint(1, 4)
        t0 = time.time()
        while proc.poll() is None and n_journal_records(cache) < want and time.time() - t0 < 120:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        so, se = proc.communicate(timeout=120)
        ok = (proc.returncode == 130 and "interrupted:" in so and "Traceback" not in se and opens_with_h5py(cache))
        out["trials"] += 1
        out["passed"] += ok
        log(f"ctrl-c {k + 1}: rc={proc.returncode} {so.strip()[:90]!r} {'OK' if ok else 'FAIL ' + se[-300:]}")
    return out


def second_writer(work: Path, log=print) -> dict:
    src = work / "sigint-src"
    cache = work / "w.h5"
    first = subprocess.Popen(extract_argv(src, cache), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # once the first holds the lock (its file exists only while held) it is stopped (SIGSTOP; the
    # lock stays held) while the second runs, so the second always meets a live first writer
    # however long its start-up takes; then the first goes on and must finish unharmed
    while first.poll() is None and not lock_path(cache).exists():
        time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)
    try:
        second = run(extract_argv(src, cache))
    finally:
        first.send_signal(signal.SIGCONT)
    first.communicate()
    lines = [ln for ln in second.stderr.strip().splitlines() if ln.startswith("featx: error:")]
    ok = (second.returncode != 0 and "Traceback" not in second.stderr and len(lines) == 1 and "in use by another featx process" in lines[0]
          and first.returncode == 0 and opens_with_h5py(cache))
    log(f"second writer: rc={second.returncode} {lines!r} first rc={first.returncode} {'OK' if ok else 'FAIL'}")
    return {"trials": 1, "passed": int(ok)}


def disk_full(work: Path, log=print) -> dict:
    """The cache on a 3 MB tmpfs filled up to a few KB: a one-line error and the old cache intact."""
    mnt = work / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"disk full: skipped, cannot mount a tmpfs ({r.stderr.strip()})")
        return {"trials": 0, "passed": 0, "skipped": r.stderr.strip()}
    try:
        src1, src2 = work / "df1", work / "df2"
        make_chest_folder(src1, 40, bad=False, offset=500)
        make_chest_folder(src2, 40, bad=False, offset=540)
        cache = mnt / "c.h5"
        assert run(extract_argv(src1, cache)).returncode == 0
        before = read_set(cache, TINY_SET)
        free = shutil.disk_usage(mnt).free
        (mnt / "filler").write_bytes(b"\0" * max(0, free - 8192))
        r = run(extract_argv(src2, cache))
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("featx: error:")]
        after = read_set(cache, TINY_SET)
        ok = (r.returncode == 2 and len(lines) == 1 and "No space left" in lines[0] and "Traceback" not in r.stderr
              and after["ids"] == before["ids"] and np.array_equal(after["X"], before["X"]))
        (mnt / "filler").unlink()
        r2 = run(extract_argv(src2, cache))
        ok = ok and r2.returncode == 0 and len(read_set(cache, TINY_SET)["ids"]) == 80
        log(f"disk full: rc={r.returncode} {lines!r}; after freeing space rc={r2.returncode} {'OK' if ok else 'FAIL'}")
        return {"trials": 1, "passed": int(ok)}
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def bad_inputs(work: Path, log=print) -> dict:
    root = work / "bad"
    exp = make_bad_inputs(root)
    r = run(extract_argv(root, work / "bad.h5"))
    got = read_set(work / "bad.h5", TINY_SET)
    done = {Path(p).name for p, o in zip(got["paths"], got["ok"]) if o}
    failed = {Path(p).name: reason for p, reason, _ in got["failures"]}
    right = 0
    for name, outcome in exp.items():
        if outcome == "ok":
            right += name in done and name not in failed
        else:
            right += name in failed and outcome[7:] in failed[name].lower() and name not in done
    ok = right == len(exp) and "Traceback" not in r.stderr
    log(f"bad inputs: {len(exp)} kinds, {right} with the right outcome, rc={r.returncode} {'OK' if ok else 'FAIL'}")
    if not ok:
        for name, outcome in exp.items():
            log(f"   {name}: expected {outcome}, got {'ok' if name in done else failed.get(name)}")
    return {"kinds": len(exp), "right": right, "names": sorted(exp)}


def issue_check(work: Path, after: float = 25.0, log=print) -> dict:
    """The issue's scenario: 600 real chest X-rays + an empty, a truncated and a non-image file,
    default backbone, kill -9 after 25 s, re-run: 600 rows, each once, 3 failures."""
    src = work / "issue"
    good, bads = make_chest_folder(src, 600)
    cache = work / "issue.h5"
    argv = [PY, "-m", "featx.cli", "extract", str(src), "-o", str(cache), "-q"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(after)
    still = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    records = n_journal_records(cache)
    t = time.time()
    r = run(argv)
    secs = time.time() - t
    import h5py
    with h5py.File(cache, "r") as f:
        name = [n for n in f["features"] if not n.endswith("_ok")][0]
        paths = [s.decode() for s in f["samples/path"][()]]
        ids = [s.decode() for s in f["samples/id"][()]]
        ok = f["features"][name + "_ok"][()]
        fails = [s.decode() for s in f["failures/path"][()]]
    res = {"killed_running": still, "journal_records_at_kill": records, "rerun_rc": r.returncode,
           "rerun_s": round(secs, 1), "rows": len(ids), "unique_ids": len(set(ids)), "all_ok": bool(ok.all()),
           "paths_match": sorted(paths) == sorted(good), "failures": sorted(Path(p).name for p in fails),
           "summary": r.stdout.strip(), "set": name}
    res["passed"] = (still and r.returncode == 0 and len(ids) == 600 and len(set(ids)) == 600 and res["all_ok"]
                     and res["paths_match"] and len(fails) == 3)
    log("issue check: " + json.dumps(res))
    return res


def table(k: dict, s: dict, w: dict, d: dict, b: dict, issue: dict | None) -> str:
    faults = ", ".join(f"{n} {kind}" for kind, n in sorted(k["faults"].items()))
    rows = [
        ("kill -9 trials (re-run completes, identical rows)", f"{k['passed']}/{k['trials']}"),
        ("kill -9 faults injected", f"{sum(k['faults'].values())} ({faults})"),
        ("kills that landed inside a commit", str(k["commit_hits"])),
        ("caches that failed to open after a kill", str(k["unopenable"])),
        ("rows lost / duplicated", f"{k['rows_lost']} / {k['dup_rows']}"),
        ("max abs feature difference vs uninterrupted run (fp32)", f"{k['max_diff']:.1e}"),
        ("Ctrl-C: exit 130, summary line, usable cache, no traceback", f"{s['passed']}/{s['trials']}"),
        ("second writer refused in one line, first unharmed", f"{w['passed']}/{w['trials']}"),
        ("disk full: one-line error, cache intact", f"{d['passed']}/{d['trials']}" if d["trials"] else "skipped"),
        ("bad-input kinds with the right outcome", f"{b['right']}/{b['kinds']}"),
    ]
    if issue is not None:
        rows.append(("600 X-rays + 3 bad, efficientnet_lite0, kill -9 at 25 s, re-run",
                     f"{issue['rows']} rows, {issue['unique_ids']} unique, {len(issue['failures'])} failures "
                     f"({'pass' if issue['passed'] else 'FAIL'})"))
    w1 = max(len(a) for a, _ in rows)
    w2 = max(len(v) for _, v in rows)
    out = [f"| {'check'.ljust(w1)} | {'result'.ljust(w2)} |", f"|{'-' * (w1 + 2)}|{'-' * (w2 + 2)}|"]
    out += [f"| {a.ljust(w1)} | {v.ljust(w2)} |" for a, v in rows]
    out.append("")
    out.append("bad inputs tried: " + ", ".join(b["names"]))
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--images", type=int, default=200, help="chest X-rays per kill trial")
    ap.add_argument("--sigint", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-issue-check", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="featx-faults-"))
    t0 = time.time()
    try:
        k = kill_trials(work, a.trials, a.images, a.seed)
        s = sigint_trials(work, a.sigint, a.seed)
        w = second_writer(work)
        d = disk_full(work)
        b = bad_inputs(work)
        issue = None if a.skip_issue_check else issue_check(work)
        print()
        print(table(k, s, w, d, b, issue))
        print(f"\n({time.time() - t0:.0f} s, {os.cpu_count()} cpus)")
        passed = (k["passed"] == k["trials"] and s["passed"] == s["trials"] and w["passed"] == w["trials"]
                  and d["passed"] == d["trials"] and b["right"] == b["kinds"] and (issue is None or issue["passed"]))
        return 0 if passed else 1
    finally:
        if a.keep:
            print(f"work folder kept: {work}")
        else:
            subprocess.run(["umount", str(work / "tmpfs")], capture_output=True)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
