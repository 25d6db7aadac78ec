#!/usr/bin/env python3
"""The raw SQLite bound for a durable store: WAL, synchronous=FULL, 1 KiB rows,
one row per transaction (one fsync each) and BATCH rows per transaction.
Prints JSON lines. usage: sqlite_bench.py DBPATH N_SINGLE N_BATCHED BATCH ROUND"""
import json, os, sqlite3, sys, time

path, n1, n2, batch, rnd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
for suf in ("", "-wal", "-shm"):
    try: os.remove(path + suf)
    except FileNotFoundError: pass
con = sqlite3.connect(path, isolation_level=None)
assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
con.execute("PRAGMA synchronous=FULL")
con.execute("CREATE TABLE m(id INTEGER PRIMARY KEY, room TEXT, body BLOB)")
payload = os.urandom(1024)

def pct(xs, q):
    xs = sorted(xs); return xs[max(0, min(len(xs) - 1, int(len(xs) * q + 0.999999) - 1))] * 1000

lat = []; t0 = time.perf_counter()
for i in range(n1):
    s = time.perf_counter()
    con.execute("BEGIN"); con.execute("INSERT INTO m(room, body) VALUES (?,?)", ("r1", payload)); con.execute("COMMIT")
    lat.append(time.perf_counter() - s)
dt = time.perf_counter() - t0
print(json.dumps({"system": "sqlite", "scenario": "throughput", "mode": "1 row/txn", "window": 1, "label": rnd,
                  "messages": n1, "accepted_per_s": n1 / dt, "ack_p50_ms": pct(lat, .5), "ack_p99_ms": pct(lat, .99)}))
lat = []; t0 = time.perf_counter()
for b in range(n2 // batch):
    s = time.perf_counter()
    con.execute("BEGIN")
    con.executemany("INSERT INTO m(room, body) VALUES (?,?)", [("r1", payload)] * batch)
    con.execute("COMMIT")
    lat.append(time.perf_counter() - s)
dt = time.perf_counter() - t0
print(json.dumps({"system": "sqlite", "scenario": "throughput", "mode": f"{batch} rows/txn", "window": batch, "label": rnd,
                  "messages": n2, "accepted_per_s": n2 / dt, "ack_p50_ms": pct(lat, .5), "ack_p99_ms": pct(lat, .99)}))
count = con.execute("SELECT count(*) FROM m").fetchone()[0]
assert count == n1 + n2, count
con.close()
