#!/usr/bin/env python3
"""Load test of a running facegate service's admin and events sockets (Unix sockets only).

    deploy/socket-load.py --admin /run/facegate/admin.sock --events /run/facegate/events.sock \
        --pid "$(pidof facegate)" [--json]

Bounded in count and time: every phase has a fixed number of connections or requests and a
deadline; the whole run stops after --max-seconds (default 120). Phases:

  sequential   200 status requests one after the other: answer latency p50/p95
  burst        8 clients x 25 requests at once (one uid): answered, rate limited, busy
  idle         600 connections that never send: how many the service keeps, its descriptors,
               and how long a status request then takes to be answered
  oversize     4 lines of 64 MiB without a newline: bytes the service took before closing,
               and its resident memory before and after
  events       20 subscribers: how many are kept, and whether they get an override's event

It talks to nothing but the two Unix sockets and /proc/PID. Run it as a user the service
authorises (root, or a member of facegate-operator), against a test terminal: the events phase
opens the gate once by operator override.
"""

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time


def request(path, req, timeout=20.0):
    """One request on a fresh connection; the answer (dict) and the seconds it took."""
    start = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        try:
            s.sendall((json.dumps(req) + "\n").encode())
        except OSError:
            pass  # a busy service answers and closes before reading
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    took = time.monotonic() - start
    return (json.loads(data) if data else {"ok": False, "error": "closed"}), took


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def kind(answer):
    if answer.get("ok"):
        return "ok"
    err = answer.get("error", "")
    for k in ("rate limited", "busy", "closed"):
        if k in err:
            return k.replace(" ", "_")
    return "error"


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def phase_sequential(a):
    lat = []
    kinds = {}
    for _ in range(200):
        ans, took = request(a.admin, {"op": "status"})
        kinds[kind(ans)] = kinds.get(kind(ans), 0) + 1
        if ans.get("ok"):
            lat.append(took * 1000)
        else:
            time.sleep(0.12)  # the per-uid rate: 10 a second after a burst of 20
    return {
        "requests": 200,
        "answers": kinds,
        "p50_ms": round(quantile(lat, 0.5), 2) if lat else None,
        "p95_ms": round(quantile(lat, 0.95), 2) if lat else None,
    }


def phase_burst(a):
    time.sleep(2.5)  # let the rate bucket refill
    kinds = {}
    lock = threading.Lock()

    def client():
        for _ in range(25):
            ans, _ = request(a.admin, {"op": "status"})
            with lock:
                kinds[kind(ans)] = kinds.get(kind(ans), 0) + 1

    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return {"clients": 8, "requests": 200, "answers": kinds, "seconds": round(time.monotonic() - start, 2)}


def phase_idle(a):
    before = fds(a.pid)
    conns = []
    for _ in range(600):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(a.admin)
            conns.append(s)
        except OSError:
            s.close()
            break
    time.sleep(2)
    during = fds(a.pid)
    # How many of the idle connections the service still holds open (the rest it closed).
    held = 0
    for s in conns:
        s.setblocking(False)
        try:
            data = s.recv(4096)
            if data == b"":
                continue  # closed without an answer
            if b"busy" in data:
                continue  # told busy and closed
            held += 1
        except BlockingIOError:
            held += 1
        except OSError:
            pass
    start = time.monotonic()
    answered = None
    tries = 0
    while time.monotonic() - start < 15:
        tries += 1
        ans, _ = request(a.admin, {"op": "status"})
        if ans.get("ok"):
            answered = time.monotonic() - start
            break
        time.sleep(0.2)
    for s in conns:
        s.close()
    return {
        "connections_made": len(conns),
        "held_by_service_after_2s": held,
        "service_fds_before": before,
        "service_fds_during": during,
        "status_answered_after_s": round(answered, 2) if answered is not None else None,
        "status_tries": tries,
    }


def phase_oversize(a):
    time.sleep(1)
    before = rss_kib(a.pid)
    taken = []
    chunk = b"a" * (1 << 20)
    for _ in range(4):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(a.admin)
        sent = 0
        try:
            while sent < (64 << 20):
                sent += s.send(chunk)
        except OSError:
            pass
        s.close()
        taken.append(sent)
    time.sleep(0.5)
    after = rss_kib(a.pid)
    return {
        "lines": 4,
        "line_bytes_offered": 64 << 20,
        "bytes_sent_before_close_max": max(taken),
        "rss_kib_before": before,
        "rss_kib_after": after,
    }


def phase_events(a):
    subs = []
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(a.events)
        s.settimeout(10)
        subs.append(s)
    time.sleep(2.5)
    ans, _ = request(a.admin, {"op": "override"})
    got = closed = 0
    for s in subs:
        try:
            data = s.recv(65536)
            if data:
                got += 1
            else:
                closed += 1
        except OSError:
            closed += 1
        s.close()
    return {"subscribers": 20, "override_queued": bool(ans.get("ok")), "received_event": got, "closed_without_event": closed}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--admin", required=True)
    p.add_argument("--events")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--max-seconds", type=float, default=120)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    deadline = time.monotonic() + a.max_seconds
    phases = [("sequential", phase_sequential), ("burst", phase_burst), ("idle", phase_idle), ("oversize", phase_oversize)]
    if a.events:
        phases.append(("events", phase_events))
    result = {}
    for name, fn in phases:
        if time.monotonic() > deadline:
            result[name] = "skipped: --max-seconds reached"
            continue
        result[name] = fn(a)
        if not a.json:
            print(f"{name}: {json.dumps(result[name])}", flush=True)
    alive = os.path.exists(f"/proc/{a.pid}")
    result["service_alive"] = alive
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"service alive afterwards: {alive}")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
