#!/usr/bin/env python3
"""Bounded loopback load test for a Matrix homeserver (Synapse, conduwuit, ...).
Phases: login alice+bob, alice creates room, bob joins; bob runs a /sync long-poll
listener for the whole test; alice sends N messages at each concurrency level.
Reports send throughput, PUT latency p50/p99, and end-to-end (PUT start -> seen in bob's /sync) p50/p99.
Prints a human line and a JSON line (the format `keepwire bench report` reads) per concurrency.
usage: matrix_bench.py [--base URL] [--n 2000] [--conc 1,16] [--body 1024] [--pingpong 200] [--label ROUND]"""
import argparse, asyncio, json, os, time, urllib.parse
import aiohttp

def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs)-1, int(len(xs)*p))] * 1000 if xs else float('nan')

async def login(s, base, u, pw):
    async with s.post(f"{base}/_matrix/client/v3/login", json={"type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": u}, "password": pw}) as r:
        r.raise_for_status(); return (await r.json())["access_token"]

class Listener:
    def __init__(s, sess, base, tok, room):
        s.sess, s.base, s.h, s.room = sess, base, {"Authorization": f"Bearer {tok}"}, room
        s.seen = {}; s.limited = 0; s.stop = False; s.waiters = {}
    async def run(s, since):
        filt = urllib.parse.quote(json.dumps({"presence": {"types": []}, "account_data": {"types": []},
                "room": {"timeline": {"limit": 5000}, "state": {"lazy_load_members": True}, "ephemeral": {"types": []}}}))
        while not s.stop:
            url = f"{s.base}/_matrix/client/v3/sync?timeout=5000&filter={filt}" + (f"&since={since}" if since else "")
            async with s.sess.get(url, headers=s.h) as r:
                j = await r.json()
            now = time.perf_counter()
            since = j["next_batch"]
            tl = j.get("rooms", {}).get("join", {}).get(s.room, {}).get("timeline", {})
            if tl.get("limited"): s.limited += 1
            for ev in tl.get("events", []):
                tag = ev.get("content", {}).get("tag")
                if tag and tag not in s.seen:
                    s.seen[tag] = now
                    w = s.waiters.pop(tag, None)
                    if w: w.set()
        return since

async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="http://127.0.0.1:8008"); ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--conc", default="1,16"); ap.add_argument("--body", type=int, default=1024)
    ap.add_argument("--pingpong", type=int, default=200)
    ap.add_argument("--users", default="alice:pw-alice,bob:pw-bob")
    ap.add_argument("--label", default="")
    a = ap.parse_args(); base = a.base
    (ua, pa), (ub, pb) = [x.split(":") for x in a.users.split(",")]
    conn = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as s:
        ta, tb = await login(s, base, ua, pa), await login(s, base, ub, pb)
        ha, hb = {"Authorization": f"Bearer {ta}"}, {"Authorization": f"Bearer {tb}"}
        async with s.post(f"{base}/_matrix/client/v3/createRoom", headers=ha, json={"preset": "private_chat"}) as r:
            room = (await r.json())["room_id"]
        async with s.get(f"{base}/_matrix/client/v3/profile/@{ub}:localhost") as r: pass
        bob_id = None
        async with s.get(f"{base}/_matrix/client/v3/account/whoami", headers=hb) as r: bob_id = (await r.json())["user_id"]
        async with s.post(f"{base}/_matrix/client/v3/rooms/{room}/invite", headers=ha, json={"user_id": bob_id}) as r: r.raise_for_status()
        async with s.post(f"{base}/_matrix/client/v3/join/{urllib.parse.quote(room)}", headers=hb, json={}) as r: r.raise_for_status()
        L = Listener(s, base, tb, room)
        # initial sync to get a since token
        async with s.get(f"{base}/_matrix/client/v3/sync?timeout=0", headers=hb) as r: since = (await r.json())["next_batch"]
        lt = asyncio.create_task(L.run(since))
        run = os.urandom(4).hex(); pad = "x" * a.body
        async def send(tag, lat, sent):
            url = f"{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/{tag}"
            t = time.perf_counter(); sent[tag] = t
            async with s.put(url, headers=ha, json={"msgtype": "m.text", "body": pad, "tag": tag}) as r:
                await r.read(); assert r.status == 200, (r.status, await r.text())
            lat.append(time.perf_counter() - t)
        # ping-pong: one message at a time, wait until bob sees it (unloaded e2e latency)
        sent, lat = {}, []; e2e = []
        for i in range(a.pingpong):
            tag = f"{run}-pp-{i}"; ev = asyncio.Event(); L.waiters[tag] = ev
            await send(tag, lat, sent); await asyncio.wait_for(ev.wait(), 30)
            e2e.append(L.seen[tag] - sent[tag])
        print(f"pingpong n={a.pingpong}: PUT p50={pct(lat,.5):.1f}ms p99={pct(lat,.99):.1f}ms | e2e(send->sync) p50={pct(e2e,.5):.1f}ms p99={pct(e2e,.99):.1f}ms", flush=True)
        for c in [int(x) for x in a.conc.split(",")]:
            sent, lat = {}, []; q = iter(range(a.n))
            async def worker():
                for i in q: await send(f"{run}-c{c}-{i}", lat, sent)
            t0 = time.perf_counter(); await asyncio.gather(*[worker() for _ in range(c)]); dt = time.perf_counter() - t0
            deadline = time.perf_counter() + 30
            while time.perf_counter() < deadline and not all(k in L.seen for k in sent): await asyncio.sleep(0.05)
            e2e = [L.seen[k] - sent[k] for k in sent if k in L.seen]
            print(f"conc={c} n={a.n}: {a.n/dt:.0f} msgs/s ({dt:.2f}s) PUT p50={pct(lat,.5):.1f}ms p99={pct(lat,.99):.1f}ms | "
                  f"e2e p50={pct(e2e,.5):.1f}ms p99={pct(e2e,.99):.1f}ms delivered={len(e2e)}/{a.n} limited_syncs={L.limited}", flush=True)
            print(json.dumps({"system": "synapse", "scenario": "throughput", "mode": "", "window": c, "label": a.label,
                              "messages": a.n, "accepted_per_s": a.n / dt, "ack_p50_ms": pct(lat, .5), "ack_p99_ms": pct(lat, .99),
                              "ack_p999_ms": pct(lat, .999), "e2e_p50_ms": pct(e2e, .5), "e2e_p99_ms": pct(e2e, .99),
                              "delivered": len(e2e)}), flush=True)
        L.stop = True; await lt

asyncio.run(main())
