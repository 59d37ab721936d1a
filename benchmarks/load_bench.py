"""Load test of `python -m gptbook serve` with a real HTTP load client, ApacheBench (`ab`).

    python benchmarks/load_bench.py [--requests 200] [--concurrency 8] [--max-concurrency 8]
                                    [--overload-concurrency 32] [--max-tokens 16] [--route /v1/completions]

Starts the server on 127.0.0.1 at a free port (with an API key), then runs ab twice:
  normal    --requests at --concurrency (at most --max-concurrency, so none should be refused);
  overload  --requests at --overload-concurrency, well above --max-concurrency: the extra requests
            should get 429 at once instead of queueing.
With --workers 1,2,4 it instead measures scaling: for each count, a server with that many worker
processes (`serve --workers N`) gets the same normal run; the table gives throughput and p95 and
what a p95-target autoscaler would choose for a range of offered loads (decide_workers).
Prints a table and one JSON line; /metrics is read before and after each run to check ab's counts.
Needs ab (Debian/Ubuntu: apt-get install apache2-utils). Every step has a time limit.
"""
import argparse
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from gptbook.deploy.bench import decide_workers

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"   # loopback only: this is a benchmark, not a test of someone else's server
API_KEY = "load-bench-key"


def free_port() -> int:
    """A port the OS says is free now. It could be taken before the server binds it; the server
    then exits and wait_healthy says so, which is good enough for a benchmark."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> str:
    """GET with the API key (the server wants it everywhere but /healthz)."""
    req = urllib.request.Request(url, headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float) -> float:
    """Poll /healthz until it answers; seconds waited. Fails early if the server process exits."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before /healthz answered")
        try:
            get(url + "/healthz", timeout=1.0)
            return time.monotonic() - t0
        except OSError:   # connection refused while the model loads
            time.sleep(0.2)
    raise RuntimeError(f"/healthz did not answer within {timeout} s")


def stop(proc: subprocess.Popen):
    """SIGINT first (uvicorn's graceful shutdown), then kill if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def requests_by_code(url: str, route: str) -> dict:
    """{status code: requests so far} on `route`, from /metrics (the server's own count)."""
    from prometheus_client.parser import text_string_to_metric_families
    counts = {}
    for family in text_string_to_metric_families(get(url + "/metrics")):
        for sample in family.samples:
            if sample.name == "gptbook_http_requests_total" and sample.labels.get("route") == route:
                counts[sample.labels["code"]] = int(sample.value)
    return counts


def run_ab(url: str, body: Path, requests: int, concurrency: int, seconds: int, tmp: Path) -> dict:
    """One ab run; its summary, with p50/p95/p99 from ab's CSV of percentiles (ms)."""
    pct = tmp / f"pct-c{concurrency}.csv"
    cmd = ["ab", "-q",                  # no "Completed 100 requests" progress lines
           "-r",                        # keep going after a socket error instead of aborting the run
           "-t", str(seconds),          # -t before -n: ab stops at whichever limit comes first
           "-n", str(requests), "-c", str(concurrency),
           "-s", "30",                  # seconds ab waits for one response
           "-p", str(body), "-T", "application/json", "-H", f"X-API-Key: {API_KEY}",
           "-e", str(pct), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"ab failed ({out.returncode}): {out.stderr.strip() or out.stdout[-500:]}")
    text = out.stdout

    def field(label: str, default: str = "0") -> float:
        m = re.search(rf"^{re.escape(label)}:\s+([\d.]+)", text, re.M)
        return float(m.group(1) if m else default)

    # ab's "Failed requests" also counts bodies whose length differs from the first response's
    # ("Length"): a 429 after a 200 is one. Only connect/receive/exception failures are errors.
    breakdown = re.search(r"\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)", text)
    connect, receive, length, exceptions = map(int, breakdown.groups()) if breakdown else (0, 0, 0, 0)
    with open(pct, newline="") as f:
        rows = {int(float(r[0])): float(r[1]) for r in list(csv.reader(f))[1:]}   # percent -> ms
    return {"concurrency": concurrency, "complete": int(field("Complete requests")),
            "seconds": field("Time taken for tests"), "rps": field("Requests per second"),
            "non_2xx": int(field("Non-2xx responses")), "socket_errors": connect + receive + exceptions,
            "length_mismatch": length, "p50_ms": rows[50], "p95_ms": rows[95], "p99_ms": rows[99],
            "max_ms": rows[100]}


def start_server(a, port: int, tmp: Path, workers: int = 1):
    log = open(tmp / f"server-{workers}.log", "w")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "gptbook", "serve", "--host", HOST, "--port", str(port),
                             "--api-key", API_KEY, "--profile", a.profile, "--workers", str(workers),
                             "--max-concurrency", str(a.max_concurrency), "--max-new-tokens", str(a.max_tokens)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def measured_run(base: str, route: str, body: Path, n: int, c: int, seconds: int, tmp: Path) -> dict:
    """One ab run with the server's own count of it by status code (the cross-check of ab's totals)."""
    before = requests_by_code(base, route)
    r = run_ab(base + route, body, n, c, seconds, tmp)
    after = requests_by_code(base, route)
    r["codes"] = {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v - before.get(k, 0)}
    r["server_total"] = sum(r["codes"].values())
    r["server_non_2xx"] = sum(v for k, v in r["codes"].items() if not k.startswith("2"))
    return r


def consistent(r: dict) -> bool:
    return r["socket_errors"] == 0 and r["server_total"] == r["complete"] and r["server_non_2xx"] == r["non_2xx"]


def scaling_main(a, counts, body: Path, tmp: Path) -> int:
    """--workers 1,2,4: the same normal run against 1, 2, 4 worker processes, then the autoscaler."""
    scaling = {}
    for w in counts:
        port = free_port()
        base = f"http://{HOST}:{port}"
        proc, log = start_server(a, port, tmp, workers=w)
        try:
            startup = wait_healthy(proc, base, timeout=180)
            for _ in range(2 * w):                      # warm every worker (requests spread over them)
                run_ab(base + a.route, body, 1, 1, 30, tmp)
            r = measured_run(base, a.route, body, a.requests, a.concurrency, a.seconds, tmp)
            r["startup_s"] = round(startup, 2)
            scaling[w] = r
        except Exception:
            log.flush()
            print((tmp / f"server-{w}.log").read_text()[-2000:], file=sys.stderr)
            raise
        finally:
            stop(proc)
            log.close()
    cores = os.cpu_count()
    print(f"scaling on {cores} CPU cores: {a.route}, {a.max_tokens} tokens, ab -c {a.concurrency}, "
          f"{a.requests} requests per count")
    print(f"{'workers':>8s}{'rps':>10s}{'x 1':>8s}{'p50 ms':>10s}{'p95 ms':>10s}{'non-2xx':>9s}")
    one = scaling[min(scaling)]["rps"]
    for w, r in scaling.items():
        print(f"{w:8d}{r['rps']:10.1f}{r['rps'] / one:8.2f}{r['p50_ms']:10.0f}{r['p95_ms']:10.0f}{r['non_2xx']:9d}")
    slo = a.slo_p95_ms
    print(f"autoscaler (p95 <= {slo:.0f} ms, at most 70 % busy): workers to run for an offered load")
    decisions = {}
    for share in (0.25, 0.5, 1.0, 1.5):
        offered = share * one
        w = decide_workers(scaling, offered, slo)
        decisions[f"{offered:.1f}"] = w
        print(f"  {offered:6.1f} req/s ({share:.2f} x one worker's throughput): "
              + (f"{w} worker(s)" if w else "none of the measured counts: add machines, not workers"))
    ok = all(consistent(r) and r["non_2xx"] == 0 for r in scaling.values())
    print(json.dumps({"benchmark": "load-scaling", "client": "ab", "route": a.route, "cores": cores,
                      "max_tokens": a.max_tokens, "concurrency": a.concurrency, "slo_p95_ms": slo,
                      "consistent": ok, "scaling": scaling, "autoscaler": decisions}))
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="requests of the normal run (default 200)")
    ap.add_argument("--overload-requests", type=int, default=1000,
                    help="requests of the overload run (default 1000: most are refused at once, so more "
                         "are needed to keep the server overloaded for a few seconds)")
    ap.add_argument("--concurrency", type=int, default=8, help="ab -c of the normal run (default 8)")
    ap.add_argument("--max-concurrency", type=int, default=8, help="the server's --max-concurrency (default 8)")
    ap.add_argument("--overload-concurrency", type=int, default=32, help="ab -c of the overload run (default 32)")
    ap.add_argument("--max-tokens", type=int, default=16, help="new tokens per request (default 16)")
    ap.add_argument("--route", default="/v1/completions", choices=["/v1/completions", "/v1/generate"])
    ap.add_argument("--seconds", type=int, default=20, help="time limit of each ab run (ab -t, default 20)")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--workers", default=None, metavar="N[,N...]",
                    help="measure scaling instead: the normal run against servers with each of these "
                         "worker counts, e.g. 1,2,4")
    ap.add_argument("--slo-p95-ms", type=float, default=1000.0,
                    help="the p95 latency target the autoscaler keeps (with --workers; default 1000)")
    a = ap.parse_args(argv)
    counts = None
    if a.workers is not None:
        try:
            counts = sorted({int(x) for x in a.workers.split(",") if x.strip()})
        except ValueError:
            ap.error(f"--workers takes counts separated by commas, like 1,2,4; got {a.workers!r}")
        if not counts or counts[0] < 1:
            ap.error(f"--workers counts must be >= 1, got {a.workers!r}")
    if a.concurrency > a.max_concurrency:
        ap.error("--concurrency must be <= --max-concurrency: the normal run should get no 429")
    if a.overload_concurrency <= a.max_concurrency:
        ap.error("--overload-concurrency must be > --max-concurrency to overload the server")
    if shutil.which("ab") is None:
        sys.exit("ab (ApacheBench) not found: apt-get install apache2-utils")

    port = free_port()
    base = f"http://{HOST}:{port}"
    tmp = Path(tempfile.mkdtemp(prefix="gptbook-load-"))
    # greedy (temperature 0) and one prompt: every 200 has the same body length, so ab's
    # "Length" failures in the normal run would point at a real difference
    body = {"prompt": "ROMEO:", "temperature": 0.0}
    body["max_tokens" if a.route == "/v1/completions" else "max_new_tokens"] = a.max_tokens
    (tmp / "body.json").write_text(json.dumps(body))
    if counts:
        try:
            return scaling_main(a, counts, tmp / "body.json", tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    proc, log = start_server(a, port, tmp)
    results = {}
    try:
        startup = wait_healthy(proc, base, timeout=120)
        # one untimed request first, so the first timed one does not pay for warm-up
        run_ab(base + a.route, tmp / "body.json", 1, 1, 30, tmp)
        for name, n, c in (("normal", a.requests, a.concurrency),
                           ("overload", a.overload_requests, a.overload_concurrency)):
            results[name] = measured_run(base, a.route, tmp / "body.json", n, c, a.seconds, tmp)
    except Exception:
        log.flush()
        print((tmp / "server-1.log").read_text()[-2000:], file=sys.stderr)
        raise
    finally:
        stop(proc)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)

    over = results["overload"]
    refused = over["codes"].get("429", 0) / max(over["complete"], 1)
    over["refused_share"] = round(refused, 3)

    cols = ("concurrency", "complete", "rps", "p50_ms", "p95_ms", "p99_ms", "non_2xx", "socket_errors")
    print(f"server: --max-concurrency {a.max_concurrency}, {a.route}, {a.max_tokens} tokens, "
          f"ready in {startup:.1f} s")
    print(f"{'run':9s}" + "".join(f"{c:>14s}" for c in cols) + "  /metrics by code")
    for name, r in results.items():
        cells = [f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        codes = " ".join(f"{k}:{v}" for k, v in r["codes"].items())
        print(f"{name:9s}" + "".join(f"{x:>14s}" for x in cells) + f"  {codes}")
    # ab cannot time the 429s apart from the 200s; when more than half were refused, the run's p50
    # is a refused request's time (a 200 needs a whole generation, the normal run's p50 or more)
    print(f"overload: {refused:.0%} refused with 429; p50 {over['p50_ms']:.0f} ms "
          f"(the normal run's p50: {results['normal']['p50_ms']:.0f} ms)")
    ok = all(consistent(r) for r in results.values())
    ok = ok and results["normal"]["non_2xx"] == 0
    print(json.dumps({"benchmark": "load", "client": "ab", "route": a.route, "max_tokens": a.max_tokens,
                      "max_concurrency": a.max_concurrency, "startup_s": round(startup, 2),
                      "consistent": ok, **results}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
