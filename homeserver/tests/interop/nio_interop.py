#!/usr/bin/env python3
"""matrix-nio <-> homeserver interop test (loopback only).

Usage:
    python homeserver/tests/interop/nio_interop.py http://127.0.0.1:8008 [--suffix S] [--allow-remote]

Drives the REAL matrix-nio AsyncClient against a homeserver, with emphasis on the
requests nio sends with NO body (POST /join, /leave, /forget, /logout, DELETE ...),
plus a "raw compat" section that replays the same requests the way older nio
releases (< 0.21) and other minimal clients do: access_token in the query string,
no Content-Type, and (raw socket) no Content-Length at all.

Every check prints PASS / FAIL / WARN (WARN = optional feature, does not affect the
exit status).  A check passes only if nio returns the expected success response
class AND the HTTP status is 2xx (nio alone does not look at the status: e.g.
RoomPutAliasResponse / RoomDeleteAliasResponse / any response whose body is not
JSON parse as "success" even on HTTP 500).

Exit status: 0 if every non-optional check passed, 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import struct
import sys
import time
import traceback
import zlib
from urllib.parse import quote, urlsplit

import aiohttp
import nio
from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    PushNotify,
    PushRuleKind,
    RoomPreset,
    RoomVisibility,
)
from nio import responses as R

PASSWORD = "interop-Pa55word!"
CS = "/_matrix/client/v3"


# --------------------------------------------------------------------------- #
# result bookkeeping
# --------------------------------------------------------------------------- #
class Results:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def record(self, status: str, name: str, detail: str = "") -> bool:
        self.rows.append((status, name, detail))
        line = f"{status:4} {name}"
        if detail:
            line += f"  -- {detail}"
        print(line, flush=True)
        return status == "PASS"

    @property
    def failed(self) -> list[tuple[str, str, str]]:
        return [r for r in self.rows if r[0] in ("FAIL", "SKIP")]


RES = Results()


def _status_of(resp) -> int | None:
    tr = getattr(resp, "transport_response", None)
    return getattr(tr, "status", None)


def _describe(resp) -> str:
    st = _status_of(resp)
    if isinstance(resp, ErrorResponse):
        return (
            f"HTTP {st} {type(resp).__name__} errcode={resp.status_code!r} "
            f"msg={resp.message!r}"
        )
    return f"HTTP {st} {type(resp).__name__}"


def check(name: str, resp, expected: type | tuple, *, optional: bool = False,
          extra_ok: bool = True, extra_msg: str = "") -> bool:
    """Success = isinstance(expected) AND not ErrorResponse AND HTTP 2xx AND extra_ok."""
    st = _status_of(resp)
    ok = (
        isinstance(resp, expected)
        and not isinstance(resp, ErrorResponse)
        and st is not None
        and 200 <= st < 300
    )
    detail = _describe(resp)
    if ok and not extra_ok:
        ok = False
        detail += f"; {extra_msg}"
    elif extra_msg and ok:
        detail += f"; {extra_msg}"
    if ok:
        return RES.record("PASS", name, detail)
    return RES.record("WARN" if optional else "FAIL", name, detail)


def check_error(name: str, resp, errcodes: tuple[str, ...]) -> bool:
    """Negative check: expect an ErrorResponse with one of errcodes and HTTP 4xx."""
    st = _status_of(resp)
    ok = isinstance(resp, ErrorResponse) and resp.status_code in errcodes and st is not None and 400 <= st < 500
    return RES.record("PASS" if ok else "FAIL", name, _describe(resp) + f" (expected {'/'.join(errcodes)})")


async def call(name: str, coro, expected, **kw):
    """Await a nio call, turn exceptions into FAIL, run check()."""
    try:
        resp = await coro
    except Exception as e:  # noqa: BLE001
        RES.record("WARN" if kw.get("optional") else "FAIL", name,
                   f"exception {type(e).__name__}: {e}")
        if os.environ.get("NIO_INTEROP_TRACE"):
            traceback.print_exc()
        return None
    check(name, resp, expected, **kw)
    return resp


def ok(resp) -> bool:
    st = _status_of(resp)
    return resp is not None and not isinstance(resp, ErrorResponse) and st is not None and 200 <= st < 300


def skip(name: str, why: str) -> None:
    RES.record("SKIP", name, why)


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def new_client(hs: str, user: str = "") -> AsyncClient:
    cfg = AsyncClientConfig(
        encryption_enabled=False,   # no olm: no keys/upload etc. during sync
        store_sync_tokens=False,
        max_limit_exceeded=3,       # default None = retry 429 forever
        max_timeouts=2,
        request_timeout=30,
    )
    return AsyncClient(hs, user=user, config=cfg)


def tiny_png() -> bytes:
    """A valid 2x2 RGB PNG (deterministic)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


async def raw_uia_register(hs: str, username: str) -> dict | None:
    """Spec UIA flow: POST {} -> 401 {session, flows} -> POST auth m.login.dummy+session."""
    url = hs + CS + "/register"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json={"username": username, "password": PASSWORD}) as r:
            first = await r.json(content_type=None)
            if r.status == 200 and "access_token" in first:
                return first
            session = first.get("session")
        body = {"username": username, "password": PASSWORD,
                "auth": {"type": "m.login.dummy", **({"session": session} if session else {})}}
        async with s.post(url, json=body) as r:
            data = await r.json(content_type=None)
            if r.status == 200 and "user_id" in data:
                return data
            print(f"      raw UIA register failed: HTTP {r.status} {data}", flush=True)
            return None


async def raw_request(session: aiohttp.ClientSession, name: str, method: str, url: str, *,
                      headers: dict | None = None, data: bytes | None = None,
                      expect_status: int = 200, expect_key: str | None = None):
    """aiohttp request with NO json/body unless data given; skip_auto_headers
    keeps aiohttp from inventing a Content-Type."""
    try:
        async with session.request(method, url, data=data, headers=headers or {},
                                   skip_auto_headers=("Content-Type",)) as r:
            text = await r.text()
            try:
                import json as _json
                body = _json.loads(text) if text else {}
            except ValueError:
                body = {"_raw": text[:200]}
            good = r.status == expect_status and (expect_key is None or expect_key in body)
            RES.record("PASS" if good else "FAIL", name,
                       f"HTTP {r.status} {str(body)[:160]}")
            return body if good else None
    except Exception as e:  # noqa: BLE001
        RES.record("FAIL", name, f"exception {type(e).__name__}: {e}")
        return None


async def raw_socket_request(hs: str, name: str, method: str, path: str,
                             extra_headers: list[str], expect_status: int = 200) -> None:
    """HTTP/1.1 request with no Content-Length and no Transfer-Encoding (=> empty
    body per RFC 9112 s6.3) -- what e.g. `curl -X POST url` sends."""
    u = urlsplit(hs)
    if u.scheme != "http":
        RES.record("WARN", name, "raw-socket test only supports http://")
        return
    host, port = u.hostname, u.port or 80
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        req = (f"{method} {path} HTTP/1.1\r\nHost: {u.netloc}\r\n"
               + "".join(h + "\r\n" for h in extra_headers)
               + "Connection: close\r\n\r\n")
        writer.write(req.encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 15)
        writer.close()
        status_line = data.split(b"\r\n", 1)[0].decode(errors="replace")
        parts = status_line.split()
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
        body = data.split(b"\r\n\r\n", 1)[-1][:160].decode(errors="replace")
        RES.record("PASS" if status == expect_status else "FAIL", name,
                   f"{status_line!r} {body!r}")
    except Exception as e:  # noqa: BLE001
        RES.record("FAIL", name, f"exception {type(e).__name__}: {e}")


# --------------------------------------------------------------------------- #
# the test
# --------------------------------------------------------------------------- #
async def run(hs: str, suffix: str) -> None:
    hs = hs.rstrip("/")
    names = {k: f"nio{k}{suffix}" for k in ("alice", "bob", "carol")}
    print(f"# matrix-nio {nio.__version__ if hasattr(nio, '__version__') else _nio_version()} "
          f"against {hs}; users: {', '.join(names.values())}", flush=True)

    clients: list[AsyncClient] = []

    def mk(user: str = "") -> AsyncClient:
        c = new_client(hs, user)
        clients.append(c)
        return c

    try:
        # ---------------- unauthenticated GETs -------------------------------
        anon = mk()
        await call("discovery_info  GET /.well-known/matrix/client (optional)",
                   anon.discovery_info(), R.DiscoveryInfoResponse, optional=True)
        await call("login_info  GET /login", anon.login_info(), R.LoginInfoResponse)

        # ---------------- register (nio single-shot m.login.dummy) -----------
        # nio.register() sends exactly one request:
        #   POST /register {"username":..,"password":..,"auth":{"type":"m.login.dummy"}}
        # (no preliminary 401 round-trip, no session).  If the server insists on a
        # session, fall back to the spec's two-step UIA via raw aiohttp.
        user_ids: dict[str, str] = {}
        for key, uname in names.items():
            rc = mk()
            resp = await call(f"register[{key}]  POST /register (nio, auth=m.login.dummy, no session)",
                              rc.register(uname, PASSWORD), R.RegisterResponse)
            if ok(resp):
                user_ids[key] = resp.user_id
                # exercise no-body GET + no-body POST /logout on the registration session
                await call(f"whoami[{key}/reg]  GET /account/whoami", rc.whoami(), R.WhoamiResponse,
                           extra_ok=True)
                await call(f"logout[{key}/reg]  POST /logout (no body)", rc.logout(), R.LogoutResponse)
            else:
                data = await raw_uia_register(hs, uname)
                if data:
                    RES.record("PASS", f"register[{key}] fallback raw UIA (POST {{}} -> 401 session -> dummy)",
                               data.get("user_id", ""))
                    user_ids[key] = data["user_id"]
                else:
                    RES.record("FAIL", f"register[{key}] fallback raw UIA", "could not register")
        if len(user_ids) != 3:
            skip("everything else", "registration failed")
            return
        server_name = user_ids["alice"].split(":", 1)[1]

        # ---------------- login with nio --------------------------------------
        a, b, c = mk(names["alice"]), mk(names["bob"]), mk(names["carol"])
        for key, cl in (("alice", a), ("bob", b), ("carol", c)):
            resp = await call(f"login[{key}]  POST /login m.login.password",
                              cl.login(PASSWORD, device_name=f"nio-interop-{key}"), R.LoginResponse)
            if not ok(resp):
                skip("everything else", "login failed")
                return
        resp = await a.whoami()
        check("whoami[alice]  GET /account/whoami", resp, R.WhoamiResponse,
              extra_ok=getattr(resp, "user_id", None) == a.user_id, extra_msg=f"user_id={getattr(resp, 'user_id', None)}")

        # ---------------- public room + join by id / alias --------------------
        alias_local = f"niointerop{suffix}"
        alias = f"#{alias_local}:{server_name}"
        resp = await call("room_create  POST /createRoom (public_chat, alias)",
                          a.room_create(visibility=RoomVisibility.public, preset=RoomPreset.public_chat,
                                        alias=alias_local, name="nio interop", topic="interop"),
                          R.RoomCreateResponse)
        if not ok(resp):
            skip("room tests", "room_create failed")
            return
        room = resp.room_id

        resp = await a.room_resolve_alias(alias)
        check("room_resolve_alias  GET /directory/room/{alias} (no auth)", resp, R.RoomResolveAliasResponse,
              extra_ok=getattr(resp, "room_id", None) == room, extra_msg=f"room_id={getattr(resp, 'room_id', None)}")
        await call("room_get_visibility  GET /directory/list/room/{id} (no auth)",
                   a.room_get_visibility(room), R.RoomGetVisibilityResponse)
        await call("list_public_rooms  GET /publicRooms (no filter => GET, no body)",
                   a.list_public_rooms(), R.PublicRoomsResponse)

        resp = await b.join(room)
        check("join(room_id)  POST /join/{roomId} (NO body)", resp, R.JoinResponse,
              extra_ok=getattr(resp, "room_id", None) == room, extra_msg=f"room_id={getattr(resp, 'room_id', None)}")
        await call("room_leave  POST /rooms/{id}/leave (NO body)", b.room_leave(room), R.RoomLeaveResponse)
        resp = await b.join(alias)
        check("join(#alias)  POST /join/{%23alias%3Aserver} (NO body)", resp, R.JoinResponse,
              extra_ok=getattr(resp, "room_id", None) == room, extra_msg=f"room_id={getattr(resp, 'room_id', None)}")

        # ---------------- messages, sync, reads -----------------------------
        resp = await call("room_send  PUT /rooms/{id}/send/m.room.message/{txn}",
                          a.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "hello from nio"}),
                          R.RoomSendResponse)
        eid = resp.event_id if ok(resp) else None

        resp = await b.sync(timeout=0, full_state=True)
        in_join = ok(resp) and room in resp.rooms.join
        seen = in_join and any(getattr(e, "event_id", None) == eid for e in resp.rooms.join[room].timeline.events)
        check("sync[bob]  GET /sync?full_state=true", resp, R.SyncResponse,
              extra_ok=in_join and (eid is None or seen),
              extra_msg=f"room in rooms.join={in_join}, message in timeline={seen}")
        await call("sync[bob] incremental  GET /sync?since=..", b.sync(timeout=0), R.SyncResponse)

        if eid:
            await call("room_get_event  GET /rooms/{id}/event/{eid}", a.room_get_event(room, eid),
                       R.RoomGetEventResponse)
            await call("room_context  GET /rooms/{id}/context/{eid}", a.room_context(room, eid, limit=5),
                       R.RoomContextResponse)
            await call("room_read_markers  POST /rooms/{id}/read_markers {m.fully_read,m.read}",
                       b.room_read_markers(room, fully_read_event=eid, read_event=eid), R.RoomReadMarkersResponse)
            await call("update_receipt_marker  POST /rooms/{id}/receipt/m.read/{eid} {thread_id:main}",
                       b.update_receipt_marker(room, eid), R.UpdateReceiptMarkerResponse)
            try:
                rels = [e async for e in a.room_get_event_relations(room, eid)]
                RES.record("PASS", "room_get_event_relations  GET /_matrix/client/v1/rooms/{id}/relations/{eid}",
                           f"{len(rels)} events")
            except Exception as e:  # noqa: BLE001  (nio raises AttributeError on an ErrorResponse here)
                RES.record("FAIL", "room_get_event_relations  GET v1 relations", f"{type(e).__name__}: {e}")
        else:
            skip("event-based checks", "room_send failed")

        resp = await a.room_messages(room, start=None, limit=10)
        found = ok(resp) and any(getattr(e, "event_id", None) == eid for e in resp.chunk)
        check("room_messages  GET /rooms/{id}/messages?dir=b&limit=10", resp, R.RoomMessagesResponse,
              extra_ok=eid is None or found, extra_msg=f"message found={found}")
        try:
            threads = [e async for e in a.room_get_threads(room)]
            RES.record("PASS", "room_get_threads  GET /_matrix/client/v1/rooms/{id}/threads", f"{len(threads)} roots")
        except Exception as e:  # noqa: BLE001
            RES.record("FAIL", "room_get_threads  GET v1 threads", f"{type(e).__name__}: {e}")
        await call("space_get_hierarchy  GET /_matrix/client/v1/rooms/{id}/hierarchy",
                   a.space_get_hierarchy(room), R.SpaceGetHierarchyResponse)
        await call("room_get_state  GET /rooms/{id}/state", a.room_get_state(room), R.RoomGetStateResponse)
        await call("room_get_state_event  GET /rooms/{id}/state/m.room.create/",
                   a.room_get_state_event(room, "m.room.create"), R.RoomGetStateEventResponse)
        resp = await a.joined_members(room)
        mem = {m.user_id for m in getattr(resp, "members", [])}
        check("joined_members  GET /rooms/{id}/joined_members", resp, R.JoinedMembersResponse,
              extra_ok={a.user_id, b.user_id} <= mem, extra_msg=f"members={sorted(mem)}")
        resp = await b.joined_rooms()
        check("joined_rooms  GET /joined_rooms", resp, R.JoinedRoomsResponse,
              extra_ok=room in getattr(resp, "rooms", []))

        await call("room_typing(true)  PUT /rooms/{id}/typing/{user} {typing,timeout}",
                   b.room_typing(room, True, 5000), R.RoomTypingResponse)
        await call("room_typing(false)  PUT /rooms/{id}/typing/{user} {typing:false}",
                   b.room_typing(room, False), R.RoomTypingResponse)
        await call("update_room_topic  PUT /rooms/{id}/state/m.room.topic/",
                   a.update_room_topic(room, "new topic"), R.RoomPutStateResponse)

        # redact with no reason: nio sends the body `{}`
        resp = await a.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "to be redacted"})
        if ok(resp):
            await call("room_redact (no reason)  PUT /rooms/{id}/redact/{eid}/{txn} body `{}`",
                       a.room_redact(room, resp.event_id), R.RoomRedactResponse)
        else:
            skip("room_redact", "second room_send failed")

        # extra alias: PUT, resolve, DELETE (DELETE has no body)
        alias2 = f"#niointerop2{suffix}:{server_name}"
        await call("room_put_alias  PUT /directory/room/{alias} {room_id}",
                   a.room_put_alias(alias2, room), R.RoomPutAliasResponse)
        resp = await a.room_resolve_alias(alias2)
        check("room_resolve_alias(alias2)", resp, R.RoomResolveAliasResponse,
              extra_ok=getattr(resp, "room_id", None) == room)
        await call("room_delete_alias  DELETE /directory/room/{alias} (NO body)",
                   a.room_delete_alias(alias2), R.RoomDeleteAliasResponse)
        resp = await a.room_resolve_alias(alias2)
        check_error("room_resolve_alias(deleted alias) -> 404", resp, ("M_NOT_FOUND",))

        # ---------------- profile / presence / misc -------------------------
        await call("set_displayname  PUT /profile/{user}/displayname", b.set_displayname("Bob Interop"),
                   R.ProfileSetDisplayNameResponse)
        resp = await b.get_displayname()
        check("get_displayname  GET /profile/{user}/displayname", resp, R.ProfileGetDisplayNameResponse,
              extra_ok=getattr(resp, "displayname", None) == "Bob Interop")
        await call("set_avatar  PUT /profile/{user}/avatar_url",
                   b.set_avatar(f"mxc://{server_name}/niointeropavatar"), R.ProfileSetAvatarResponse)
        await call("get_avatar  GET /profile/{user}/avatar_url", b.get_avatar(), R.ProfileGetAvatarResponse)
        await call("get_profile  GET /profile/{user}", b.get_profile(), R.ProfileGetResponse)
        await call("set_presence  PUT /presence/{user}/status", a.set_presence("online", "interop"),
                   R.PresenceSetResponse)
        await call("get_presence  GET /presence/{user}/status", a.get_presence(a.user_id), R.PresenceGetResponse)
        # OpenID tokens (for widgets and integrations) are not served yet: optional.
        await call("get_openid_token  POST /user/{user}/openid/request_token body `{}` (optional)",
                   a.get_openid_token(a.user_id), R.GetOpenIDTokenResponse, optional=True)
        await call("devices  GET /devices", a.devices(), R.DevicesResponse)
        await call("update_device  PUT /devices/{id} {display_name}",
                   a.update_device(a.device_id, {"display_name": "nio interop renamed"}), R.UpdateDeviceResponse)
        resp = await a.list_direct_rooms()
        # GET /user/{id}/account_data/m.direct: spec says 404 M_NOT_FOUND when unset.
        if isinstance(resp, ErrorResponse):
            check_error("list_direct_rooms  GET /user/{id}/account_data/m.direct (unset -> 404)",
                        resp, ("M_NOT_FOUND",))
        else:
            check("list_direct_rooms  GET /user/{id}/account_data/m.direct", resp, R.DirectRoomsResponse)

        rule_id = f"niointerop{suffix}"
        await call("set_pushrule  PUT /pushrules/global/override/{rule}",
                   a.set_pushrule("global", PushRuleKind.override, rule_id, actions=[PushNotify()], conditions=[]),
                   R.SetPushRuleResponse)
        await call("delete_pushrule  DELETE /pushrules/global/override/{rule} (NO body)",
                   a.delete_pushrule("global", PushRuleKind.override, rule_id), R.DeletePushRuleResponse)

        # ---------------- media (its own, later issue: optional here) ------
        await call("content_repository_config  GET /_matrix/client/v1/media/config (optional)",
                   a.content_repository_config(), R.ContentRepositoryConfigResponse, optional=True)
        png = tiny_png()
        try:
            up, _ = await a.upload(io.BytesIO(png), content_type="image/png", filename="pixel.png",
                                   filesize=len(png))
        except Exception as e:  # noqa: BLE001
            up = None
            RES.record("WARN", "upload  POST /_matrix/media/v3/upload (optional)", f"exception {e!r}")
        if up is not None and check("upload  POST /_matrix/media/v3/upload?filename= (raw image/png body) (optional)",
                                    up, R.UploadResponse, optional=True):
            mxc = up.content_uri
            resp = await a.download(mxc)
            check("download  GET /_matrix/client/v1/media/download/{srv}/{id} (authenticated)", resp,
                  R.DownloadResponse, extra_ok=getattr(resp, "body", None) == png, extra_msg="bytes round-trip")
            u = urlsplit(mxc)
            await call("thumbnail  GET /_matrix/client/v1/media/thumbnail/... (optional)",
                       a.thumbnail(u.netloc, u.path.lstrip("/"), 32, 32), R.ThumbnailResponse, optional=True)

        # ---------------- leave / forget -------------------------------------
        await call("room_leave  POST /rooms/{id}/leave (NO body)", b.room_leave(room), R.RoomLeaveResponse)
        await call("room_forget  POST /rooms/{id}/forget (NO body)", b.room_forget(room), R.RoomForgetResponse)

        # ---------------- invite / accept / kick / reject / ban / unban ------
        resp = await call("room_create  POST /createRoom (private_chat)",
                          a.room_create(preset=RoomPreset.private_chat, name="nio interop private"),
                          R.RoomCreateResponse)
        if ok(resp):
            priv = resp.room_id
            resp = await b.join(priv)
            check_error("join(private room, not invited) -> 403", resp, ("M_FORBIDDEN",))
            await call("room_invite  POST /rooms/{id}/invite {user_id}", a.room_invite(priv, b.user_id),
                       R.RoomInviteResponse)
            resp = await b.sync(timeout=0)
            check("sync[bob] shows invite", resp, R.SyncResponse,
                  extra_ok=ok(resp) and priv in resp.rooms.invite, extra_msg="room in rooms.invite")
            resp = await b.join(priv)
            check("join(invited room)  POST /join/{roomId} (NO body) = accept invite", resp, R.JoinResponse,
                  extra_ok=getattr(resp, "room_id", None) == priv)
            await call("room_kick  POST /rooms/{id}/kick {user_id,reason}",
                       a.room_kick(priv, b.user_id, reason="interop kick"), R.RoomKickResponse)
            await call("room_invite (again)", a.room_invite(priv, b.user_id), R.RoomInviteResponse)
            await call("room_leave  POST /rooms/{id}/leave (NO body) = reject invite", b.room_leave(priv),
                       R.RoomLeaveResponse)
            await call("room_ban  POST /rooms/{id}/ban {user_id,reason}",
                       a.room_ban(priv, b.user_id, reason="interop ban"), R.RoomBanResponse)
            resp = await b.join(priv)
            check_error("join(banned) -> 403", resp, ("M_FORBIDDEN",))
            await call("room_unban  POST /rooms/{id}/unban {user_id}", a.room_unban(priv, b.user_id),
                       R.RoomUnbanResponse)
            await call("room_invite (after unban)", a.room_invite(priv, b.user_id), R.RoomInviteResponse)
            resp = await b.join(priv)
            check("join(after unban+invite)", resp, R.JoinResponse, extra_ok=getattr(resp, "room_id", None) == priv)
        else:
            skip("invite/kick/ban", "private room_create failed")

        # ---------------- knock (nio sends body `{}` when no reason) ----------
        resp = await call("room_create  POST /createRoom (private_chat, for knock)",
                          a.room_create(preset=RoomPreset.private_chat, name="nio interop knock"),
                          R.RoomCreateResponse)
        if ok(resp):
            kroom = resp.room_id
            await call("room_enable_knocking  PUT /rooms/{id}/state/m.room.join_rules/ {join_rule:knock}",
                       a.room_enable_knocking(kroom), R.RoomPutStateResponse)
            resp = await c.room_knock(kroom)
            check("room_knock (no reason)  POST /knock/{roomId} body `{}`", resp, R.RoomKnockResponse,
                  extra_ok=getattr(resp, "room_id", None) == kroom)
            await call("room_leave (rescind knock)  POST /rooms/{id}/leave (NO body)", c.room_leave(kroom),
                       R.RoomLeaveResponse)
        else:
            skip("knock", "room_create failed")

        # ---------------- raw compat: pre-0.21 nio / curl style ---------------
        # access_token in the query string, no Authorization header, no Content-Type, no body.
        tok = c.access_token
        q = "?access_token=" + quote(tok, safe="")
        async with aiohttp.ClientSession() as s:
            await raw_request(s, "raw: GET /account/whoami?access_token= (query-string token)", "GET",
                              f"{hs}{CS}/account/whoami{q}", expect_key="user_id")
            await raw_request(s, "raw: POST /join/{roomId}?access_token= (no body, no Content-Type, CL: 0)",
                              "POST", f"{hs}{CS}/join/{quote(room, safe='')}{q}", expect_key="room_id")
            await raw_request(s, "raw: POST /rooms/{id}/leave?access_token= (no body, no Content-Type)",
                              "POST", f"{hs}{CS}/rooms/{quote(room, safe='')}/leave{q}")
            await raw_request(s, "raw: POST /rooms/{id}/forget?access_token= (no body, no Content-Type)",
                              "POST", f"{hs}{CS}/rooms/{quote(room, safe='')}/forget{q}")
            await raw_request(s, "raw: POST /join/{alias} Content-Type: application/json + empty body (nio 0.26 shape)",
                              "POST", f"{hs}{CS}/join/{quote(alias, safe='')}",
                              headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"},
                              expect_key="room_id")
            await raw_request(s, "raw: POST /rooms/{id}/leave Content-Type: application/json + empty body",
                              "POST", f"{hs}{CS}/rooms/{quote(room, safe='')}/leave",
                              headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"})
        # no Content-Length header at all (curl -X POST style)
        await raw_socket_request(hs, "raw-socket: POST /join/{alias} (no Content-Length, no body)", "POST",
                                 f"{CS}/join/{quote(alias, safe='')}{q}", [])
        await raw_socket_request(hs, "raw-socket: POST /rooms/{id}/leave (no Content-Length, Bearer)", "POST",
                                 f"{CS}/rooms/{quote(room, safe='')}/leave", [f"Authorization: Bearer {tok}"])
        await raw_socket_request(hs, "raw-socket: POST /rooms/{id}/forget (no CL, Content-Type json)", "POST",
                                 f"{CS}/rooms/{quote(room, safe='')}/forget",
                                 [f"Authorization: Bearer {tok}", "Content-Type: application/json"])

        # ---------------- logout ----------------------------------------------
        a_tok, b_tok = a.access_token, b.access_token
        await call("logout[alice]  POST /logout (NO body)", a.logout(), R.LogoutResponse)
        await call("logout[bob]  POST /logout/all (NO body)", b.logout(all_devices=True), R.LogoutResponse)
        async with aiohttp.ClientSession() as s:
            for who, t in (("alice", a_tok), ("bob", b_tok)):
                await raw_request(s, f"raw: old token of {who} rejected after logout", "GET",
                                  f"{hs}{CS}/account/whoami",
                                  headers={"Authorization": f"Bearer {t}"}, expect_status=401)
            await raw_request(s, "raw: POST /logout?access_token= (no body, no Content-Type)", "POST",
                              f"{hs}{CS}/logout{q}")
        c.access_token = ""  # carol's token was revoked by the raw logout above
    finally:
        for cl in clients:
            try:
                await cl.close()
            except Exception:  # noqa: BLE001
                pass


def _nio_version() -> str:
    try:
        from importlib.metadata import version
        return version("matrix-nio")
    except Exception:  # noqa: BLE001
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("homeserver", help="e.g. http://127.0.0.1:8008")
    ap.add_argument("--suffix", default=None,
                    help="username/alias suffix (default: derived from time+pid so reruns don't collide)")
    ap.add_argument("--allow-remote", action="store_true", help="allow a non-loopback homeserver URL")
    args = ap.parse_args()

    u = urlsplit(args.homeserver)
    if u.scheme not in ("http", "https") or not u.hostname:
        print(f"bad homeserver URL {args.homeserver!r}", file=sys.stderr)
        return 2
    if not args.allow_remote and u.hostname not in ("127.0.0.1", "localhost", "::1"):
        print(f"refusing non-loopback host {u.hostname!r} (use --allow-remote)", file=sys.stderr)
        return 2
    suffix = args.suffix if args.suffix is not None else f"{int(time.time())}{os.getpid() % 1000:03d}"
    if not suffix.isalnum() or suffix != suffix.lower():
        print("--suffix must be lowercase alphanumeric", file=sys.stderr)
        return 2

    asyncio.run(run(args.homeserver, suffix))

    n_pass = sum(1 for r in RES.rows if r[0] == "PASS")
    n_warn = sum(1 for r in RES.rows if r[0] == "WARN")
    bad = RES.failed
    print(f"\n# summary: {n_pass} passed, {len(bad)} failed/skipped, {n_warn} optional warnings")
    for st, name, detail in bad:
        print(f"#   {st} {name}  -- {detail}")
    return 1 if bad or not RES.rows else 0


if __name__ == "__main__":
    sys.exit(main())
