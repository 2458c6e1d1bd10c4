#!/usr/bin/env python3
"""matrix-nio end-to-end encryption against a homeserver (loopback only).

Usage:
    python homeserver/tests/interop/nio_e2ee.py http://127.0.0.1:8008

Two real matrix-nio clients with the `e2e` extra (vodozemac) register, upload their device
keys, share an encrypted room and exchange messages that each decrypts: keys queried,
one-time keys claimed, the room key sent to-device, the events stored as ciphertext. Then a
second device of one user logs in and, once its keys are known, receives the room key of a
new message through to-device and decrypts it. Exit status 0 when every check passed.
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import quote

import aiohttp
import tempfile
import uuid

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinedMembersResponse,
    RoomCreateResponse,
    RoomMessageText,
)

FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""), flush=True)
    if not ok:
        FAILURES.append(name)


async def client(base: str, user: str, store: str, register: bool = True) -> AsyncClient:
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    c = AsyncClient(base, user, store_path=store, config=config)
    password = f"pw-{user}-secret"
    if register:
        response = await c.register(user, password, device_name="nio e2ee")
    else:
        response = await c.login(password, device_name="nio second device")
    assert c.access_token, f"{user}: {response}"
    return c


async def sync(c: AsyncClient, rounds: int = 1) -> None:
    for _ in range(rounds):
        await c.sync(timeout=500, full_state=False)
        if c.should_upload_keys:
            await c.keys_upload()
        if c.should_query_keys:
            await c.keys_query()
        if c.should_claim_keys:
            await c.keys_claim(c.get_users_for_key_claiming())
        await c.send_to_device_messages()


async def decrypted(c: AsyncClient, room: str, body: str) -> bool:
    """Whether `c` sees `body` decrypted in `room`, syncing for a while."""
    seen: list[str] = []

    def on_message(_room, event) -> None:
        if isinstance(event, RoomMessageText):
            seen.append(event.body)

    c.add_event_callback(on_message, RoomMessageText)
    for _ in range(30):
        await sync(c)
        if body in seen:
            return True
    return False


def trust_everyone(c: AsyncClient, users: list[str]) -> None:
    for user in users:
        for device in c.device_store.active_user_devices(user):
            if device.device_id != c.device_id:
                c.verify_device(device)


async def main(base: str) -> int:
    tag = uuid.uuid4().hex[:6]
    stores = [tempfile.mkdtemp() for _ in range(3)]
    alice = await client(base, f"nioa_{tag}", stores[0])
    bob = await client(base, f"niob_{tag}", stores[1])
    try:
        await sync(alice)
        await sync(bob)
        check("device keys uploaded", alice.olm is not None and not alice.should_upload_keys)

        created = await alice.room_create(invite=[bob.user_id], initial_state=[{
            "type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"},
        }])
        check("encrypted room created", isinstance(created, RoomCreateResponse), str(created))
        room = created.room_id
        await sync(bob)
        await bob.join(room)
        await sync(alice, 2)
        await sync(bob, 2)
        members = await alice.joined_members(room)
        check("both joined", isinstance(members, JoinedMembersResponse) and len(members.members) == 2)

        await alice.keys_query() if alice.should_query_keys else None
        trust_everyone(alice, [bob.user_id])
        sent = await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": f"secret {tag}"},
                                     ignore_unverified_devices=True)
        check("alice sends encrypted", getattr(sent, "event_id", None) is not None, str(sent))
        check("bob decrypts alice's message", await decrypted(bob, room, f"secret {tag}"))

        trust_everyone(bob, [alice.user_id])
        await bob.room_send(room, "m.room.message", {"msgtype": "m.text", "body": f"reply {tag}"},
                            ignore_unverified_devices=True)
        check("alice decrypts bob's reply", await decrypted(alice, room, f"reply {tag}"))

        # What the server holds, read raw: ciphertext only.
        url = f"{base}/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=50"
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers={"Authorization": f"Bearer {alice.access_token}"}) as answer:
                page = await answer.text()
        check("the server stores ciphertext", "m.room.encrypted" in page and f"secret {tag}" not in page, page[:300])

        # A second device of Bob's: once Alice knows it, the next room key reaches it too.
        phone = await client(base, bob.user_id.split(":")[0][1:], stores[2], register=False)
        await sync(phone, 2)
        await sync(alice, 2)
        if alice.should_query_keys:
            await alice.keys_query()
        trust_everyone(alice, [bob.user_id])
        await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": f"for both {tag}"},
                              ignore_unverified_devices=True)
        check("a new device receives the room key via to-device", await decrypted(phone, room, f"for both {tag}"))
        await phone.close()
    finally:
        await alice.close()
        await bob.close()
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed: {FAILURES}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(sys.argv[1])))
