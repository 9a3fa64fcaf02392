"""Room permissions and server health through the real server (API.md 7)."""

from __future__ import annotations

from typing import Any

import httpx
import trio

import trio_events
from trio_events import __version__

from .helpers import assert_error
from .rest_helpers import (
    Actor,
    admin_actor,
    body_of,
    comment,
    comments,
    create_room,
    history,
    post,
    snapshot,
    user_actors,
)

TIMEOUT = 60

# The 24 flags of the Virola permissions document (doc/permissions.md).
VIROLA_FLAGS = {
    "canAttachOrDeleteFilesInOwnMessagesInDiscussion",
    "canAttachOrDeleteFilesInOwnMessagesInMainThread",
    "canChangePropertiesOfUnrelatedIssues",
    "canCreateIssues",
    "canCreateMeetings",
    "canEditOrDeleteOwnMessagesInDiscussion",
    "canEditOrDeleteOwnMessagesInMainThread",
    "canIntercomListen",
    "canIntercomStreamVideo",
    "canIntercomTalk",
    "canIntercomWatchVideo",
    "canReactToMessagesWithEmojiInDiscussion",
    "canReactToMessagesWithEmojiInMainThread",
    "canRecordMeetings",
    "canSendFilesIntoRoomInDiscussion",
    "canSendFilesIntoRoomInMainThread",
    "canSendMessagesInDiscussion",
    "canSendMessagesInMainThread",
    "canSendNudge",
    "canShareScreen",
    "canUseIntercom",
    "uiCanSeeRoomSidebar",
    "uiCanSeeWhoReadMessageInDiscussion",
    "uiCanSeeWhoReadMessageInMainThread",
}
ALIASES = {
    "canReactToTextMessagesWithEmojiInMainThread": "canReactToMessagesWithEmojiInMainThread",
    "canReactToTextMessagesWithEmojiInDiscussion": "canReactToMessagesWithEmojiInDiscussion",
    "uiCanSeeWhoReadMessagesInMainThread": "uiCanSeeWhoReadMessageInMainThread",
    "uiCanSeeWhoReadMessagesInDiscussion": "uiCanSeeWhoReadMessageInDiscussion",
}
MISSING_FEATURES = {
    "canUseIntercom",
    "canIntercomListen",
    "canIntercomTalk",
    "canIntercomStreamVideo",
    "canIntercomWatchVideo",
    "canShareScreen",
    "canRecordMeetings",
}
WRITE_FLAGS = {
    "canSendMessagesInMainThread",
    "canSendMessagesInDiscussion",
    "canEditOrDeleteOwnMessagesInMainThread",
    "canEditOrDeleteOwnMessagesInDiscussion",
    "canCreateIssues",
    "canCreateMeetings",
}


async def permissions(client: httpx.AsyncClient, actor: Actor, room_id: int) -> dict[str, bool]:
    body = body_of(await client.get(f"/api/v1/room-permissions/{room_id}", headers=actor.headers))
    assert set(body) == {"httpStatusCode", "roomPermissions"}
    assert body["roomPermissions"]["roomId"] == room_id
    flags = body["roomPermissions"]["permissions"]
    assert isinstance(flags, dict)
    return flags


def check_shape(flags: dict[str, bool]) -> None:
    assert set(flags) == VIROLA_FLAGS | set(ALIASES)
    assert all(isinstance(value, bool) for value in flags.values())
    for alias, twin in ALIASES.items():
        assert flags[alias] == flags[twin], alias
    for name in MISSING_FEATURES:
        assert flags[name] is False, name


async def test_permissions_shape_aliases_and_roles(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        member, mod = await user_actors(client, server, "member", "mod")
        room_id = await create_room(client, admin, "r", "Private", [member], [mod])
        as_member = await permissions(client, member, room_id)
        as_mod = await permissions(client, mod, room_id)
        as_admin = await permissions(client, admin, room_id)
        issue = await post(client, mod, room_id, "task", messageType="Issue")
        before = await snapshot(client, server, member)
        response = await client.patch(
            f"/api/v1/messages/{issue}",
            json={"issueProperties": {"status": "Done"}},
            headers=member.headers,
        )
        assert_error(response, 403)  # not an issue of theirs, and the flag said so
        assert await snapshot(client, server, member) == before
        changed = body_of(
            await client.patch(
                f"/api/v1/messages/{issue}",
                json={"issueProperties": {"status": "Done"}},
                headers=admin.headers,
            )
        )["message"]
    for flags in (as_member, as_mod, as_admin):
        check_shape(flags)
        for name in WRITE_FLAGS:
            assert flags[name] is True, name
        assert flags["uiCanSeeRoomSidebar"] is True
    assert as_member["canChangePropertiesOfUnrelatedIssues"] is False
    assert as_mod["canChangePropertiesOfUnrelatedIssues"] is True
    assert as_admin["canChangePropertiesOfUnrelatedIssues"] is True
    assert changed["issueProperties"] == {"type": "Task", "status": "Done", "assignees": []}


async def test_assignees_may_change_their_issues_properties_only(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    """canChangePropertiesOfUnrelatedIssues is for moderators; the users
    involved with an issue (author, assignees) change its properties without it,
    and nothing else of it."""

    async def change(actor: Actor, message_id: int, **fields: Any) -> httpx.Response:
        url = f"/api/v1/messages/{message_id}"
        return await client.patch(url, json=fields, headers=actor.headers)

    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        author, bob, carol = await user_actors(client, server, "author", "bob", "carol")
        room_id = await create_room(client, admin, "r", "Private", [author, bob, carol])
        issue = await post(
            client,
            author,
            room_id,
            "task",
            messageType="Issue",
            issueProperties={"assignees": [bob.user_id]},
        )
        regular = await post(client, author, room_id, "plain")
        thread = await post(client, carol, room_id, "thread")
        sub_issue = await comment(client, carol, thread, "sub-task", messageType="Issue")
        flags = await permissions(client, bob, room_id)
        assert flags["canChangePropertiesOfUnrelatedIssues"] is False
        assert flags["canEditOrDeleteOwnMessagesInMainThread"] is True

        moved = body_of(await change(bob, issue, issueProperties={"status": "InProgress"}))
        assert moved["message"]["issueProperties"]["status"] == "InProgress"
        assert moved["message"]["text"] == "task"
        before = await snapshot(client, server, author)
        refused = [
            await change(bob, issue, content="mine now"),
            await change(bob, issue, issueProperties={"status": "Done"}, priority="High"),
            await change(bob, issue, issueProperties={"status": "Done"}, markupType="TextMarkdown"),
            await change(bob, regular, issueProperties={"status": "Done"}),
            await change(carol, issue, issueProperties={"status": "Done"}),
            await change(bob, sub_issue, issueProperties={"status": "Done"}),
        ]
        assert await snapshot(client, server, author) == before
        for response in refused:
            assert_error(response, 403)

        handed = await change(bob, issue, issueProperties={"assignees": [carol.user_id]})
        assert body_of(handed)["message"]["issueProperties"]["assignees"] == [carol.user_id]
        assert_error(await change(bob, issue, issueProperties={"status": "Done"}), 403)
        done = body_of(await change(carol, issue, issueProperties={"status": "Done"}))
        assert done["message"]["issueProperties"] == {
            "type": "Task",
            "status": "Done",
            "assignees": [carol.user_id],
        }
        body_of(await change(carol, sub_issue, issueProperties={"assignees": [bob.user_id]}))
        body_of(await change(bob, sub_issue, issueProperties={"type": "Bug"}))
        listed = await comments(client, bob, thread)
        assert listed[0]["issueProperties"] == {
            "type": "Bug",
            "status": "ToDo",
            "assignees": [bob.user_id],
        }

        archive = {"isArchived": True}
        body_of(await client.patch(f"/api/v1/rooms/{room_id}", json=archive, headers=admin.headers))
        assert_error(await change(carol, issue, issueProperties={"status": "ToDo"}), 403)


async def test_archived_room_permissions_are_enforced(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        (alice,) = await user_actors(client, server, "alice")
        room_id = await create_room(client, admin, "r", "Public")
        message_id = await post(client, alice, room_id, "mine")
        body_of(
            await client.patch(
                f"/api/v1/rooms/{room_id}", json={"isArchived": True}, headers=admin.headers
            )
        )
        flags = await permissions(client, alice, room_id)
        admin_flags = await permissions(client, admin, room_id)
        before = await snapshot(client, server, alice)
        refused = [
            await client.post(
                f"/api/v1/rooms/{room_id}/messages", json={"content": "x"}, headers=alice.headers
            ),
            await client.post(
                f"/api/v1/messages/{message_id}/comments",
                json={"content": "x"},
                headers=alice.headers,
            ),
            await client.patch(
                f"/api/v1/messages/{message_id}", json={"content": "x"}, headers=alice.headers
            ),
            await client.delete(f"/api/v1/messages/{message_id}", headers=alice.headers),
        ]
        assert await snapshot(client, server, alice) == before
        assert [m["text"] for m in await history(client, alice, room_id)] == ["mine"]
    check_shape(flags)
    check_shape(admin_flags)
    for name in WRITE_FLAGS | {"canChangePropertiesOfUnrelatedIssues"}:
        assert flags[name] is False, name
        assert admin_flags[name] is False, name
    for response in refused:
        assert_error(response, 403)


async def test_permissions_of_missing_or_hidden_room_are_404(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        (outsider,) = await user_actors(client, server, "outsider")
        room_id = await create_room(client, admin, "r", "Private")
        hidden = await client.get(f"/api/v1/room-permissions/{room_id}", headers=outsider.headers)
        missing = await client.get("/api/v1/room-permissions/424242", headers=admin.headers)
        anonymous = await client.get(f"/api/v1/room-permissions/{room_id}")
    assert_error(hidden, 404)
    assert_error(missing, 404)
    assert_error(anonymous, 401)


async def test_server_health(client: httpx.AsyncClient, server: trio_events.RunningServer) -> None:
    with trio.fail_after(TIMEOUT):
        (alice,) = await user_actors(client, server, "alice")
        health = body_of(await client.get("/api/v1/server-health", headers=alice.headers))
        anonymous = await client.get("/api/v1/server-health")
        ready = await client.get("/readyz")
    assert health["status"] == "ok"
    assert health["version"] == __version__
    assert isinstance(health["uptimeSeconds"], int | float)
    assert health["uptimeSeconds"] >= 0
    assert_error(anonymous, 401)
    assert ready.status_code == 200
    assert ready.json()["httpStatusCode"] == 200


async def test_server_health_reports_open_streams(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    """API.md 7: server-health reports "status, version, uptime, open streams"."""
    with trio.fail_after(TIMEOUT):
        (alice,) = await user_actors(client, server, "alice")
        health = body_of(await client.get("/api/v1/server-health", headers=alice.headers))
    streams = [key for key in health if "stream" in key.lower()]
    assert streams, f"no open-streams field in {sorted(health)}"
    assert all(isinstance(health[key], int) for key in streams)
