"""A Lattice plugin in Python: a greeter bot. It joins rooms it is invited to and answers
`!hello` in a thread with a greeting and how many it has given (kept in the plugin's store)."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import guest
from wit_world.imports import kv, log, matrix, types

COUNT_KEY = "greetings"


def send_options() -> matrix.SendOptions:
    return matrix.SendOptions(as_user=None, txn_id=None, origin_ts=None)


class Guest(exports.Guest):
    def init(self, info_json: str) -> guest.Registration:
        info = json.loads(info_json)
        log.log(log.Level.INFO, f"python greeter starting as {info['user_id']}")
        return guest.Registration(version="1.0.0", commands=["hello"], config=[])

    def migrate(self, from_version):
        return None

    def on_event(self, ev: types.Event, delivery: types.Delivery) -> None:
        content = json.loads(ev.content_json)
        if ev.event_type == "m.room.member" and ev.state_key == matrix.whoami() and content.get("membership") == "invite":
            matrix.join(None, ev.room_id, [])

    def on_command(self, invocation: guest.Invocation, delivery: types.Delivery) -> None:
        event = invocation.event
        count = self.bump()
        body = f"hello, {event.sender}! ({count} greetings so far)"
        content = {
            "msgtype": "m.notice",
            "body": body,
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": event.thread_root or event.event_id,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": event.event_id},
            },
        }
        # The delivery id makes a redelivered command answer once.
        options = matrix.SendOptions(as_user=None, txn_id=f"hello-{delivery.id}", origin_ts=None)
        matrix.send(event.room_id, "m.room.message", json.dumps(content), options)

    def on_timer(self, tag: str) -> None:
        return None

    def bump(self) -> int:
        """Adds one to the stored count with compare-and-swap, and returns it."""
        while True:
            entry = kv.get(COUNT_KEY)
            current = int(entry.value.decode()) if entry else 0
            version = entry.version if entry else 0
            if kv.cas(COUNT_KEY, version, str(current + 1).encode(), None) is not None:
                return current + 1
