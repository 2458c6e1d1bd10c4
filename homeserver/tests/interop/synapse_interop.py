#!/usr/bin/env python3
"""Lattice <-> Synapse federation interop (loopback only).

Usage:
    python synapse_interop.py LATTICE_CLIENT_URL LATTICE_SERVER_NAME SYNAPSE_CLIENT_URL SYNAPSE_SERVER_NAME

Both servers are already running and federate with each other over HTTPS (`.ci/synapse-interop`
starts them). The script drives each server's client-server API with plain HTTP requests and
checks that what one server's user does reaches the other server's user: joins in both
directions, messages both ways in order, invites (accepted and rejected), leaves, typing, read
receipts, profile queries, backfill for a late joiner, media, and end-to-end encryption's
server side (keys queried and claimed, to-device messages, device-list updates).

Every check prints PASS or FAIL; the exit status is 0 only if every check passed.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote

FAILURES: list[str] = []
WAIT_SECONDS = 30.0


class HttpError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


class User:
    """One registered user on one server, with its own sync position."""

    def __init__(self, base: str, server_name: str, localpart: str):
        self.base = base.rstrip("/")
        self.server_name = server_name
        self.token = ""
        self.since: str | None = None
        body = {
            "username": localpart,
            "password": "interop-password-" + localpart,
            "auth": {"type": "m.login.dummy"},
            "initial_device_display_name": "interop",
        }
        answer = self.call("POST", "/_matrix/client/v3/register", body, auth=False)
        self.user_id: str = answer["user_id"]
        self.token = answer["access_token"]

    def call(self, method: str, path: str, body=None, auth: bool = True, timeout: float = 60.0):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as err:
            raise HttpError(err.code, err.read().decode(errors="replace")) from None
        return json.loads(text) if text else {}

    def raw(self, method: str, path: str, data: bytes | None = None, content_type: str | None = None):
        """A request with a raw body; the answer's status, headers and bytes."""
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        request.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(request, timeout=60.0) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()

    def upload(self, data: bytes, content_type: str, filename: str) -> str:
        status, _, body = self.raw("POST", f"/_matrix/media/v3/upload?filename={filename}", data, content_type)
        assert status == 200, f"upload: {status} {body[:300]!r}"
        return json.loads(body)["content_uri"].removeprefix("mxc://")

    def create_room(self, **extra) -> str:
        return self.call("POST", "/_matrix/client/v3/createRoom", extra)["room_id"]

    def join(self, room: str, via: str | None = None, timeout: float = 60.0) -> str:
        path = "/_matrix/client/v3/join/" + quote(room, safe="")
        if via:
            path += "?via=" + quote(via, safe="")
        return self.call("POST", path, {}, timeout=timeout)["room_id"]

    def leave(self, room: str):
        self.call("POST", f"/_matrix/client/v3/rooms/{quote(room, safe='')}/leave", {})

    def invite(self, room: str, user_id: str):
        self.call("POST", f"/_matrix/client/v3/rooms/{quote(room, safe='')}/invite", {"user_id": user_id})

    def send(self, room: str, body: str) -> str:
        path = f"/_matrix/client/v3/rooms/{quote(room, safe='')}/send/m.room.message/{uuid.uuid4().hex}"
        return self.call("PUT", path, {"msgtype": "m.text", "body": body})["event_id"]

    def sync(self, timeout_ms: int = 1000) -> dict:
        path = f"/_matrix/client/v3/sync?timeout={timeout_ms}"
        if self.since:
            path += "&since=" + quote(self.since, safe="")
        answer = self.call("GET", path, timeout=timeout_ms / 1000 + 30)
        self.since = answer["next_batch"]
        return answer

    def messages(self, room: str, limit: int = 100) -> list[dict]:
        path = f"/_matrix/client/v3/rooms/{quote(room, safe='')}/messages?dir=b&limit={limit}"
        return self.call("GET", path)["chunk"]

    def state_event(self, room: str, event_type: str, state_key: str = "") -> dict:
        path = f"/_matrix/client/v3/rooms/{quote(room, safe='')}/state/{event_type}/{quote(state_key, safe='')}"
        return self.call("GET", path)

    def membership(self, room: str, user_id: str) -> str | None:
        try:
            return self.state_event(room, "m.room.member", user_id).get("membership")
        except HttpError as err:
            if err.status in (403, 404):
                return None
            raise

    def wait_sync(self, what: str, found) -> dict:
        """Syncs until `found(sync_answer)` is truthy; returns that value."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            value = found(self.sync(timeout_ms=2000))
            if value:
                return value
        raise AssertionError(f"{self.user_id}: timed out waiting for {what}")

    def wait_for(self, what: str, predicate):
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"{self.user_id}: timed out waiting for {what}")

    def wait_for_bodies(self, room: str, bodies: list[str]) -> list[str]:
        """Waits until the room's history holds every body; returns them in history order."""

        def seen():
            chunk = self.messages(room)
            texts = [
                e["content"].get("body")
                for e in reversed(chunk)
                if e.get("type") == "m.room.message" and e.get("content", {}).get("body") in bodies
            ]
            return texts if len(set(texts)) == len(bodies) else None

        return self.wait_for(f"messages {bodies} in {room}", seen)


def png(width: int, height: int) -> bytes:
    """A gradient PNG made here (no imaging library needed)."""
    import struct
    import zlib

    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 128))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int]:
    import struct

    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def check(name: str, fn) -> None:
    try:
        fn()
        print(f"PASS {name}", flush=True)
    except Exception as err:  # noqa: BLE001 - every failure is reported, then the run goes on
        FAILURES.append(name)
        print(f"FAIL {name}: {err}", flush=True)
        traceback.print_exc(limit=3)


def joined_in_sync(room: str):
    return lambda answer: room in answer.get("rooms", {}).get("join", {})


def invited_in_sync(room: str):
    return lambda answer: room in answer.get("rooms", {}).get("invite", {})


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    lattice_url, lattice_name, synapse_url, synapse_name = argv[1:]
    tag = uuid.uuid4().hex[:6]
    lat = User(lattice_url, lattice_name, f"lat_{tag}")
    syn = User(synapse_url, synapse_name, f"syn_{tag}")
    lat2 = User(lattice_url, lattice_name, f"lat2_{tag}")
    print(f"users: {lat.user_id} {lat2.user_id} {syn.user_id}", flush=True)

    rooms: dict[str, str] = {}

    def lattice_joins_synapse_room():
        room = syn.create_room(preset="public_chat", name="on synapse")
        rooms["syn"] = room
        assert lat.join(room, via=synapse_name) == room
        syn.wait_for("Lattice user's join", lambda: syn.membership(room, lat.user_id) == "join")
        lat.wait_sync("the room in sync", joined_in_sync(room))
        assert lat.state_event(room, "m.room.name")["name"] == "on synapse"

    def messages_both_ways_in_synapse_room():
        room = rooms["syn"]
        sent: list[str] = []
        for i in range(3):
            # Each side waits for the other's message before answering, so the order is fixed.
            sent.append(f"from synapse {i} {tag}")
            syn.send(room, sent[-1])
            lat.wait_for_bodies(room, sent)
            sent.append(f"from lattice {i} {tag}")
            lat.send(room, sent[-1])
            syn.wait_for_bodies(room, sent)
        assert lat.wait_for_bodies(room, sent) == sent
        assert syn.wait_for_bodies(room, sent) == sent

    def synapse_joins_lattice_room():
        room = lat.create_room(preset="public_chat", name="on lattice")
        rooms["lat"] = room
        assert syn.join(room, via=lattice_name) == room
        lat.wait_for("Synapse user's join", lambda: lat.membership(room, syn.user_id) == "join")
        assert syn.state_event(room, "m.room.name")["name"] == "on lattice"

    def messages_both_ways_in_lattice_room():
        room = rooms["lat"]
        sent = [f"lattice first {tag}", f"synapse second {tag}", f"lattice third {tag}"]
        lat.send(room, sent[0])
        syn.wait_for_bodies(room, sent[:1])
        syn.send(room, sent[1])
        lat.wait_for_bodies(room, sent[:2])
        lat.send(room, sent[2])
        assert syn.wait_for_bodies(room, sent) == sent
        assert lat.wait_for_bodies(room, sent) == sent

    def profile_queries():
        lat.call("PUT", f"/_matrix/client/v3/profile/{quote(lat.user_id)}/displayname", {"displayname": "Lat"})
        syn.call("PUT", f"/_matrix/client/v3/profile/{quote(syn.user_id)}/displayname", {"displayname": "Syn"})
        from_synapse = syn.call("GET", f"/_matrix/client/v3/profile/{quote(lat.user_id)}")
        assert from_synapse.get("displayname") == "Lat", from_synapse
        from_lattice = lat.call("GET", f"/_matrix/client/v3/profile/{quote(syn.user_id)}")
        assert from_lattice.get("displayname") == "Syn", from_lattice

    def synapse_invites_lattice_user():
        room = syn.create_room(preset="private_chat", name="invite from synapse")
        syn.invite(room, lat.user_id)
        invite = lat.wait_sync("the invite", lambda a: a["rooms"]["invite"].get(room))
        names = [e["content"].get("name") for e in invite["invite_state"]["events"] if e["type"] == "m.room.name"]
        assert names == ["invite from synapse"], invite
        # No via: the invite says which server to join through.
        lat.call("POST", f"/_matrix/client/v3/rooms/{quote(room, safe='')}/join", {})
        syn.wait_for("the invitee's join", lambda: syn.membership(room, lat.user_id) == "join")
        lat.wait_sync("the room joined", joined_in_sync(room))

    def lattice_invites_synapse_user():
        room = lat.create_room(preset="private_chat", name="invite from lattice")
        lat.invite(room, syn.user_id)
        assert lat.membership(room, syn.user_id) == "invite"
        invite = syn.wait_sync("the invite", lambda a: a["rooms"]["invite"].get(room))
        names = [e["content"].get("name") for e in invite["invite_state"]["events"] if e["type"] == "m.room.name"]
        assert names == ["invite from lattice"], invite
        syn.call("POST", f"/_matrix/client/v3/rooms/{quote(room, safe='')}/join", {})
        lat.wait_for("the invitee's join", lambda: lat.membership(room, syn.user_id) == "join")

    def invites_rejected_both_ways():
        room = syn.create_room(preset="private_chat")
        syn.invite(room, lat2.user_id)
        lat2.wait_sync("the invite", lambda a: a["rooms"]["invite"].get(room))
        lat2.leave(room)
        syn.wait_for("the rejection", lambda: syn.membership(room, lat2.user_id) == "leave")
        lat2.wait_sync("the room left", lambda a: room in a["rooms"]["leave"] or room not in a["rooms"]["invite"])

        room = lat.create_room(preset="private_chat")
        lat.invite(room, syn.user_id)
        syn.wait_sync("the invite", lambda a: a["rooms"]["invite"].get(room))
        syn.leave(room)
        lat.wait_for("the rejection", lambda: lat.membership(room, syn.user_id) == "leave")

    def ephemeral_of(room: str):
        return lambda a: a.get("rooms", {}).get("join", {}).get(room, {}).get("ephemeral", {}).get("events", [])

    def typing_both_ways():
        room = rooms["syn"]
        for typist, watcher in ((lat, syn), (syn, lat)):
            path = f"/_matrix/client/v3/rooms/{quote(room, safe='')}/typing/{quote(typist.user_id, safe='')}"
            typist.call("PUT", path, {"typing": True, "timeout": 20000})
            watcher.wait_sync(
                f"{typist.user_id} typing",
                lambda a, t=typist: any(
                    e["type"] == "m.typing" and t.user_id in e["content"].get("user_ids", [])
                    for e in ephemeral_of(room)(a)
                ),
            )
            typist.call("PUT", path, {"typing": False})

    def receipts_both_ways():
        room = rooms["syn"]
        for reader, writer in ((lat, syn), (syn, lat)):
            body = f"read me {reader.user_id} {tag}"
            event_id = writer.send(room, body)
            reader.wait_for_bodies(room, [body])
            path = f"/_matrix/client/v3/rooms/{quote(room, safe='')}/receipt/m.read/{quote(event_id, safe='')}"
            reader.call("POST", path, {})
            writer.wait_sync(
                f"{reader.user_id}'s receipt",
                lambda a, r=reader, e=event_id: any(
                    ev["type"] == "m.receipt" and r.user_id in ev["content"].get(e, {}).get("m.read", {})
                    for ev in ephemeral_of(room)(a)
                ),
            )

    def synapse_backfills_from_lattice():
        room = lat.create_room(preset="public_chat", name="history on lattice")
        history = [f"history {i} {tag}" for i in range(5)]
        for body in history:
            lat.send(room, body)
        assert syn.join(room, via=lattice_name) == room
        # Synapse's /messages backfills what came before its join from Lattice.
        assert syn.wait_for_bodies(room, history) == history

    def lattice_backfills_from_synapse():
        room = syn.create_room(preset="public_chat", name="history on synapse")
        history = [f"old {i} {tag}" for i in range(15)]
        for body in history:
            syn.send(room, body)
        assert lat.join(room, via=synapse_name) == room
        # Paging back on Lattice fetches what came before the join from Synapse.
        found: list[str] = []
        token = None
        for _ in range(10):
            path = f"/_matrix/client/v3/rooms/{quote(room, safe='')}/messages?dir=b&limit=10"
            if token:
                path += "&from=" + quote(token, safe="")
            page = lat.call("GET", path)
            found += [e["content"].get("body") for e in page["chunk"] if e.get("type") == "m.room.message"]
            if any(e.get("type") == "m.room.create" for e in page["chunk"]) or not page.get("end"):
                break
            token = page["end"]
        found.reverse()
        assert [b for b in found if b in history] == history, found

    def directories_and_alias_joins_both_ways():
        for owner, other in ((syn, lat), (lat, syn)):
            localpart = f"lobby_{owner.user_id[1:4]}_{tag}"
            name = f"lobby {localpart}"
            room = owner.create_room(preset="public_chat", name=name, room_alias_name=localpart, visibility="public")
            alias = f"#{localpart}:{owner.server_name}"
            found = other.call("GET", f"/_matrix/client/v3/directory/room/{quote(alias, safe='')}")
            assert found["room_id"] == room and owner.server_name in found["servers"], found
            page = other.call("POST", "/_matrix/client/v3/publicRooms?server=" + quote(owner.server_name, safe=""),
                              {"filter": {"generic_search_term": localpart}})
            assert any(r["room_id"] == room for r in page["chunk"]), page
            assert other.join(alias) == room
            owner.wait_for("the join by alias", lambda r=room, o=other: owner.membership(r, o.user_id) == "join")

    def knocks_both_ways():
        knock_rule = [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]
        for owner, knocker in ((syn, lat2), (lat, syn)):
            room = owner.create_room(preset="private_chat", name="knock here", initial_state=knock_rule)
            path = f"/_matrix/client/v3/knock/{quote(room, safe='')}?via={quote(owner.server_name, safe='')}"
            knocker.call("POST", path, {"reason": "hello"})
            owner.wait_for("the knock", lambda r=room, k=knocker: owner.membership(r, k.user_id) == "knock")
            knocker.wait_sync("the room knocked on", lambda a, r=room: r in a["rooms"].get("knock", {}))
            owner.invite(room, knocker.user_id)
            knocker.wait_sync("the invite", lambda a, r=room: r in a["rooms"]["invite"])
            knocker.call("POST", f"/_matrix/client/v3/rooms/{quote(room, safe='')}/join", {})
            owner.wait_for("the join", lambda r=room, k=knocker: owner.membership(r, k.user_id) == "join")

    def older_room_versions_both_ways():
        pairs = ((syn, lat, "5"), (lat, syn, "4"), (syn, lat, "3"), (lat, syn, "2"), (syn, lat, "2"), (lat, syn, "1"), (syn, lat, "1"))
        for owner, other, version in pairs:
            room = owner.create_room(preset="public_chat", room_version=version)
            assert other.join(room, via=owner.server_name) == room
            sent = [f"v{version} from {owner.user_id} {tag}", f"v{version} from {other.user_id} {tag}"]
            owner.send(room, sent[0])
            other.wait_for_bodies(room, sent[:1])
            other.send(room, sent[1])
            assert owner.wait_for_bodies(room, sent) == sent
            assert other.state_event(room, "m.room.create")["room_version"] == version

    def presence_both_ways():
        for setter, watcher in ((lat, syn), (syn, lat)):
            status = f"/_matrix/client/v3/presence/{quote(setter.user_id, safe='')}/status"
            message = f"status of {setter.user_id} {tag}"
            setter.call("PUT", status, {"presence": "online", "status_msg": message})
            watcher.wait_for(
                f"{setter.user_id}'s presence",
                lambda s=status, m=message: watcher.call("GET", s).get("status_msg") == m,
            )

    def restricted_joins_both_ways():
        for owner, joiner in ((syn, lat), (lat, syn)):
            space = owner.create_room(preset="public_chat", creation_content={"type": "m.space"})
            rule = [{"type": "m.room.join_rules", "state_key": "", "content": {
                "join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}}]
            room = owner.create_room(preset="private_chat", initial_state=rule, room_version="10")
            assert joiner.join(space, via=owner.server_name) == space
            owner.wait_for("the space join", lambda s=space: owner.membership(s, joiner.user_id) == "join")
            assert joiner.join(room, via=owner.server_name) == room
            owner.wait_for("the restricted join", lambda r=room: owner.membership(r, joiner.user_id) == "join")

    def e2ee_keys_and_to_device_both_ways():
        # Each side's device keys queried and one-time keys claimed by the other's user through
        # federation, a to-device message delivered across, and a new device announced (the
        # other side's sync lists the user in device_lists.changed).
        for owner, other in ((lat, syn), (syn, lat)):
            owner.sync(timeout_ms=0)
            device = other.call("GET", "/_matrix/client/v3/account/whoami")["device_id"]
            keys = {
                "user_id": other.user_id, "device_id": device,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                "keys": {f"curve25519:{device}": f"curve-{tag}", f"ed25519:{device}": f"ed-{tag}"},
                "signatures": {other.user_id: {f"ed25519:{device}": "sig"}},
            }
            otks = {f"signed_curve25519:k{i}{tag}": {"key": f"otk{i}", "signatures": {}} for i in range(2)}
            other.call("POST", "/_matrix/client/v3/keys/upload", {"device_keys": keys, "one_time_keys": otks})
            answer = owner.call("POST", "/_matrix/client/v3/keys/query", {"device_keys": {other.user_id: []}})
            got = answer["device_keys"].get(other.user_id, {}).get(device, {})
            assert got.get("keys", {}).get(f"curve25519:{device}") == f"curve-{tag}", answer
            claim = {"one_time_keys": {other.user_id: {device: "signed_curve25519"}}}
            answer = owner.call("POST", "/_matrix/client/v3/keys/claim", claim)
            claimed = answer["one_time_keys"].get(other.user_id, {}).get(device, {})
            assert len(claimed) == 1, answer
            other.sync(timeout_ms=0)
            path = f"/_matrix/client/v3/sendToDevice/m.room.encrypted/{uuid.uuid4().hex}"
            body = {"messages": {other.user_id: {device: {"algorithm": "test", "note": f"to-device {tag}"}}}}
            owner.call("PUT", path, body)
            other.wait_sync("the to-device message", lambda a, o=owner: any(
                e.get("sender") == o.user_id and e["content"].get("note") == f"to-device {tag}"
                for e in a.get("to_device", {}).get("events", [])))
            login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": other.user_id},
                     "password": "interop-password-" + other.user_id[1:].split(":")[0]}
            new = other.call("POST", "/_matrix/client/v3/login", login, auth=False)
            # The same user on a second device (a login, not a registration).
            second = object.__new__(User)
            second.base, second.server_name, second.since = other.base, other.server_name, None
            second.token, second.user_id = new["access_token"], other.user_id
            new_device = new["device_id"]
            keys = dict(keys, device_id=new_device, keys={f"curve25519:{new_device}": "c2", f"ed25519:{new_device}": "e2"},
                        signatures={other.user_id: {f"ed25519:{new_device}": "sig"}})
            second.call("POST", "/_matrix/client/v3/keys/upload", {"device_keys": keys})
            owner.wait_sync(f"{other.user_id} in device_lists.changed", lambda a, o=other: o.user_id in
                            a.get("device_lists", {}).get("changed", []))

    def leaves_both_ways():
        lat.leave(rooms["syn"])
        syn.wait_for("the Lattice user's leave", lambda: syn.membership(rooms["syn"], lat.user_id) == "leave")
        syn.leave(rooms["lat"])
        lat.wait_for("the Synapse user's leave", lambda: lat.membership(rooms["lat"], syn.user_id) == "leave")

    def media_both_ways():
        # Lattice's media downloaded through Synapse, Synapse's through Lattice (byte for byte),
        # and a thumbnail of Synapse's image generated by Lattice.
        data = bytes((i * 7) % 251 for i in range(300_000))
        path = lat.upload(data, "application/octet-stream", "notes.bin")
        status, _, body = syn.raw("GET", f"/_matrix/client/v1/media/download/{path}")
        assert status == 200 and body == data, f"Synapse fetching Lattice media: {status} {len(body)}"
        image = png(640, 320)
        path = syn.upload(image, "image/png", "gradient.png")
        status, headers, body = lat.raw("GET", f"/_matrix/client/v1/media/download/{path}")
        assert status == 200 and body == image, f"Lattice fetching Synapse media: {status} {body[:200]!r}"
        assert headers["Content-Type"] == "image/png", headers["Content-Type"]
        query = "width=96&height=96&method=crop"
        status, headers, body = lat.raw("GET", f"/_matrix/client/v1/media/thumbnail/{path}?{query}")
        assert status == 200, f"thumbnail: {status} {body[:200]!r}"
        assert png_size(body) == (96, 96), png_size(body)

    check("Lattice user joins a Synapse room", lattice_joins_synapse_room)
    check("messages both ways in order in the Synapse room", messages_both_ways_in_synapse_room)
    check("Synapse user joins a Lattice room", synapse_joins_lattice_room)
    check("messages both ways in order in the Lattice room", messages_both_ways_in_lattice_room)
    check("profile queries both ways", profile_queries)
    check("a Synapse user invites a Lattice user, who joins", synapse_invites_lattice_user)
    check("a Lattice user invites a Synapse user, who joins", lattice_invites_synapse_user)
    check("invites rejected both ways", invites_rejected_both_ways)
    check("Synapse backfills a room's history from Lattice", synapse_backfills_from_lattice)
    check("Lattice backfills a room's history from Synapse", lattice_backfills_from_synapse)
    check("aliases and public rooms found and joined both ways", directories_and_alias_joins_both_ways)
    check("knocks let in both ways", knocks_both_ways)
    check("rooms of versions 1 to 5 both ways", older_room_versions_both_ways)
    check("restricted joins through a space both ways", restricted_joins_both_ways)
    check("presence both ways", presence_both_ways)
    check("typing both ways", typing_both_ways)
    check("read receipts both ways", receipts_both_ways)
    check("end-to-end encryption keys, claims, to-device and device lists both ways", e2ee_keys_and_to_device_both_ways)
    check("leaves both ways", leaves_both_ways)
    check("media fetched over federation both ways", media_both_ways)

    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed: {FAILURES}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
