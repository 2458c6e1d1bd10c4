#!/usr/bin/env python3
"""Federation benchmarks, Lattice next to Synapse, measured in the same run on the same machine.

Usage (through `.ci/synapse-interop --bench`, which starts both servers):
    python synapse_bench.py LATTICE_CLIENT_URL LATTICE_NAME SYNAPSE_CLIENT_URL SYNAPSE_NAME \
        LATTICE_PID SYNAPSE_PID RESTART_COMMAND_LATTICE RESTART_COMMAND_SYNAPSE \
        [SECOND_SYNAPSE_CLIENT_URL SECOND_SYNAPSE_NAME]

Three figures, each measured both ways so every Lattice number has its Synapse counterpart:

1. Joining a big room held by the other server: a room with MEMBERS members and STATE_EVENTS
   state events in all (members included) is built on each server; a user of the other server
   joins it; the time of the join request is the figure. Both of these joins are full-state
   joins (Synapse asks for a partial state, Lattice answers with the full one). For reference, a
   second Synapse joins the first one's room with Synapse's partial-state ("faster") join, timed
   to the join's answer and to the moment its members list is complete (Synapse holds that
   request until the background resync of the room's state is done).
2. Throughput: MESSAGES messages sent by a user of one server into a room both servers are in,
   as fast as the sending server takes them (SENDERS concurrent clients); the figure is the time
   until the last is readable on the other server, and the CPU time each server's process used
   per message (from /proc).
3. Catch-up: the receiving server is stopped, OUTAGE seconds pass while CATCH_UP messages are
   sent, it is started again; the figure is the time from its restart until the last message is
   readable there, and every message must be (nothing lost).

Sizes come from the environment (LATTICE_BENCH_MEMBERS, _STATE_EVENTS, _MESSAGES, _SENDERS,
_CATCH_UP, _OUTAGE); the defaults are the issue's (5,000 members, 10,000 state events, 10,000
missed messages, a 10-minute outage). Results are printed as a Markdown table.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
import uuid
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synapse_interop import HttpError, User  # noqa: E402

MEMBERS = int(os.environ.get("LATTICE_BENCH_MEMBERS", "5000"))
STATE_EVENTS = int(os.environ.get("LATTICE_BENCH_STATE_EVENTS", "10000"))
MESSAGES = int(os.environ.get("LATTICE_BENCH_MESSAGES", "2000"))
SENDERS = int(os.environ.get("LATTICE_BENCH_SENDERS", "8"))
CATCH_UP = int(os.environ.get("LATTICE_BENCH_CATCH_UP", "10000"))
OUTAGE = float(os.environ.get("LATTICE_BENCH_OUTAGE", "600"))
PARALLEL = 16
BIG_TIMEOUT = 1800.0  # a client's patience with the join of a big room, generous on purpose
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mib(pid: int) -> float:
    """The most resident memory the process has used so far."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def many(count: int, work) -> list:
    """Runs `work(i)` for every i, PARALLEL at a time, in order of i."""
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(work, range(count)))


def log(message: str):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def big_room(base: str, name: str, tag: str) -> tuple[User, str]:
    """A public room on one server with MEMBERS members and STATE_EVENTS state events."""
    creator = User(base, name, f"bench-owner-{tag}")
    room = creator.create_room(preset="public_chat", name=f"big room {tag}")
    users = many(MEMBERS - 1, lambda i: User(base, name, f"bench-{tag}-{i}"))
    many(len(users), lambda i: users[i].join(room))
    extra = STATE_EVENTS - MEMBERS - 7  # createRoom's own state events, roughly
    path = f"/_matrix/client/v3/rooms/{quote(room, safe='')}/state/org.lattice.bench/"
    # One at a time: concurrent state events fork Synapse's room and make it resolve state for
    # each (an attempt with 16 senders slowed to 0.35 events/s at 7,000 state events).
    for i in range(max(extra, 0)):
        creator.call("PUT", path + str(i), {"i": i})
    log(f"built {room} on {name}: {MEMBERS} members, {STATE_EVENTS} state events")
    return creator, room


def timed_join(joiner: User, room: str, via: str) -> float:
    started = time.monotonic()
    joiner.join(room, via=via, timeout=BIG_TIMEOUT)
    return time.monotonic() - started


def partial_join(joiner: User, room: str, via: str) -> tuple[float, float]:
    """A join answered before the full state is here: when the join returned, and when the
    members list (which waits for the full state) did."""
    started = time.monotonic()
    joiner.join(room, via=via, timeout=BIG_TIMEOUT)
    joined = time.monotonic()
    path = f"/_matrix/client/v3/rooms/{quote(room, safe='')}/joined_members"
    joiner.call("GET", path, timeout=BIG_TIMEOUT)
    return joined - started, time.monotonic() - started


def wait_for_body(user: User, room: str, body: str, deadline_s: float) -> float:
    """Polls the room's newest events until `body` is among them; returns when it was seen."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if any(e.get("content", {}).get("body") == body for e in user.messages(room, limit=20)):
                return time.monotonic()
        except HttpError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{user.user_id} never saw {body!r}")


def all_bodies(user: User, room: str, prefix: str) -> set[str]:
    """Every message body starting with `prefix` the user can page back to."""
    seen: set[str] = set()
    token = None
    for _ in range(1000):
        path = f"/_matrix/client/v3/rooms/{quote(room, safe='')}/messages?dir=b&limit=500"
        if token:
            path += "&from=" + quote(token, safe="")
        page = user.call("GET", path)
        for event in page["chunk"]:
            body = event.get("content", {}).get("body", "")
            if body.startswith(prefix):
                seen.add(body)
        # Only a missing `end` ends the history (Synapse may answer an empty page while it
        # backfills); the create event is its beginning.
        previous, token = token, page.get("end")
        if not token or token == previous or any(e["type"] == "m.room.create" for e in page["chunk"]):
            return seen
    return seen


def send_all(sender: User, room: str, bodies: list[str]):
    """Sends the messages with SENDERS clients of the same user (each its own transaction ids)."""
    path = f"/_matrix/client/v3/rooms/{quote(room, safe='')}/send/m.room.message/"

    def send(i: int):
        sender.call("PUT", path + uuid.uuid4().hex, {"msgtype": "m.text", "body": bodies[i]})

    with concurrent.futures.ThreadPoolExecutor(SENDERS) as pool:
        list(pool.map(send, range(len(bodies))))


def throughput(sender: User, receiver: User, room: str, pids: dict[str, int], tag: str) -> dict:
    bodies = [f"{tag} {i:06}" for i in range(MESSAGES)]
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    send_all(sender, room, bodies)
    sent = time.monotonic()
    seen = wait_for_body(receiver, room, bodies[-1], 600)
    cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    return {
        "send_s": sent - started,
        "arrive_s": seen - started,
        "per_s": MESSAGES / (seen - started),
        "cpu_ms": {name: 1000 * (cpu_after[name] - cpu_before[name]) / MESSAGES for name in pids},
    }


def catch_up(sender: User, receiver: User, room: str, stop, start, tag: str) -> dict:
    stop()
    down = time.monotonic()
    bodies = [f"{tag} {i:06}" for i in range(CATCH_UP)]
    send_all(sender, room, bodies)
    remaining = OUTAGE - (time.monotonic() - down)
    if remaining > 0:
        time.sleep(remaining)
    start()
    restarted = time.monotonic()
    seen = wait_for_body(receiver, room, bodies[-1], 3600)
    held = all_bodies(receiver, room, tag)
    return {"outage_s": restarted - down, "catch_up_s": seen - restarted, "lost": CATCH_UP - len(held)}


def cell(value: float) -> str:
    return "—" if value != value else f"{value:.2f}"  # NaN: a figure only one server has


def main() -> int:
    lat_base, lat_name, syn_base, syn_name = sys.argv[1:5]
    pids = {"Lattice": int(sys.argv[5]), "Synapse": int(sys.argv[6])}
    restart_lattice, restart_synapse = sys.argv[7], sys.argv[8]
    log(f"sizes: {MEMBERS} members, {STATE_EVENTS} state events, {MESSAGES} messages, "
        f"{CATCH_UP} missed during {OUTAGE:.0f} s")

    rows = []
    # 1. Joins of big rooms.
    _, syn_room = big_room(syn_base, syn_name, "s")
    _, lat_room = big_room(lat_base, lat_name, "l")
    lat_joiner = User(lat_base, lat_name, "bench-joiner")
    syn_joiner = User(syn_base, syn_name, "bench-joiner")
    lattice_join = timed_join(lat_joiner, syn_room, syn_name)
    log(f"Lattice joined Synapse's room in {lattice_join:.2f} s")
    synapse_join = timed_join(syn_joiner, lat_room, lat_name)
    log(f"Synapse joined Lattice's room in {synapse_join:.2f} s")
    rows.append(("Join a room of the other server (s)", lattice_join, synapse_join))
    if len(sys.argv) > 10:
        second = User(sys.argv[9], sys.argv[10], "bench-joiner")
        answered, complete = partial_join(second, syn_room, syn_name)
        log(f"a second Synapse joined Synapse's room (partial state) in {answered:.2f} s, "
            f"its full state complete after {complete:.2f} s")
        rows.append(("Reference: a second Synapse joins Synapse's room, partial state: join answered (s)",
                     float("nan"), answered))
        rows.append(("Reference: the same join, full state complete (s)", float("nan"), complete))
    rows.append(("Peak RSS so far, rooms built and joined (MiB)", peak_rss_mib(pids["Lattice"]),
                 peak_rss_mib(pids["Synapse"])))

    # 2. Throughput, in a small room both servers are in.
    lat_user = User(lat_base, lat_name, "bench-talker")
    syn_user = User(syn_base, syn_name, "bench-talker")
    room = lat_user.create_room(preset="public_chat", name="throughput")
    syn_user.join(room, via=lat_name)
    to_synapse = throughput(lat_user, syn_user, room, pids, "to-synapse")
    log(f"Lattice -> Synapse: {to_synapse}")
    to_lattice = throughput(syn_user, lat_user, room, pids, "to-lattice")
    log(f"Synapse -> Lattice: {to_lattice}")
    rows.append(("Messages/s delivered when this server sends", to_synapse["per_s"], to_lattice["per_s"]))
    rows.append(("CPU ms per message, sending server", to_synapse["cpu_ms"]["Lattice"], to_lattice["cpu_ms"]["Synapse"]))
    rows.append(("CPU ms per message, receiving server", to_lattice["cpu_ms"]["Lattice"], to_synapse["cpu_ms"]["Synapse"]))

    # 3. Catch-up after an outage of the receiving server.
    def control(command: str, action: str):
        return lambda: subprocess.run([command, action], check=True)

    lattice_back = catch_up(syn_user, lat_user, room, control(restart_lattice, "stop"),
                            control(restart_lattice, "start"), "missed-by-lattice")
    log(f"Lattice catching up: {lattice_back}")
    synapse_back = catch_up(lat_user, syn_user, room, control(restart_synapse, "stop"),
                            control(restart_synapse, "start"), "missed-by-synapse")
    log(f"Synapse catching up: {synapse_back}")
    rows.append((f"Catch-up of {CATCH_UP} missed messages after {lattice_back['outage_s']:.0f} s down (s)",
                 lattice_back["catch_up_s"], synapse_back["catch_up_s"]))
    rows.append(("Messages lost in the catch-up", lattice_back["lost"], synapse_back["lost"]))

    print("\n| Measure | Lattice | Synapse |\n|---|---:|---:|")
    for name, lattice, synapse in rows:
        print(f"| {name} | {cell(lattice)} | {cell(synapse)} |")
    return 0 if lattice_back["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
