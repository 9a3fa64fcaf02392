-- Rooms, memberships, pins, messages and comments, read receipts, and the
-- event log (the transactional outbox: a change and its events commit together).
-- depends: 0001.initial

CREATE TABLE rooms (
    room_id            INTEGER PRIMARY KEY AUTOINCREMENT,
    display_name       TEXT    NOT NULL,
    room_type          TEXT    NOT NULL CHECK (room_type IN ('Private', 'Public')),
    is_archived        INTEGER NOT NULL DEFAULT 0 CHECK (is_archived IN (0, 1)),
    -- top-level messages in the room; unread = message_count - room_reads.read_count
    message_count      INTEGER NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    created_utc        INTEGER NOT NULL,
    last_modified_utc  INTEGER NOT NULL
);

CREATE TABLE room_members (
    room_id       INTEGER NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    user_id       INTEGER NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    is_moderator  INTEGER NOT NULL DEFAULT 0 CHECK (is_moderator IN (0, 1)),
    added_utc     INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_by_user ON room_members (user_id);

CREATE TABLE room_pins (
    room_id  INTEGER NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    PRIMARY KEY (room_id, user_id)
);

-- How many of a room's top-level messages each user has read.
CREATE TABLE room_reads (
    room_id     INTEGER NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    read_count  INTEGER NOT NULL CHECK (read_count >= 0),
    PRIMARY KEY (room_id, user_id)
);

CREATE TABLE messages (
    message_id         INTEGER PRIMARY KEY AUTOINCREMENT,  -- messages and comments share ids
    room_id            INTEGER NOT NULL REFERENCES rooms (room_id) ON DELETE CASCADE,
    parent_message_id  INTEGER NOT NULL DEFAULT 0,          -- 0: top-level
    user_id            INTEGER NOT NULL REFERENCES users (user_id),
    text               TEXT    NOT NULL,
    markup_type        TEXT    NOT NULL,
    message_type       TEXT    NOT NULL,
    priority           TEXT    NOT NULL,
    issue_properties   TEXT,                                -- JSON, when message_type = 'Issue'
    meeting_properties TEXT,                                -- JSON, when message_type = 'Meeting'
    comment_count      INTEGER NOT NULL DEFAULT 0 CHECK (comment_count >= 0),
    created_utc        INTEGER NOT NULL,
    last_modified_utc  INTEGER NOT NULL,
    last_edited_utc    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX messages_by_room ON messages (room_id, parent_message_id, message_id);
CREATE INDEX messages_by_parent ON messages (parent_message_id, message_id);

CREATE TABLE message_reads (
    message_id  INTEGER NOT NULL REFERENCES messages (message_id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    read_utc    INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id)
);

-- The event log.  audience_user_ids NULL: everyone who may access room_id at
-- this point of the log; otherwise a JSON list of user ids.  Types starting
-- with "acl." or "session." are internal: they change who may see what and are
-- never sent to clients.
CREATE TABLE events (
    event_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type        TEXT    NOT NULL,
    room_id           INTEGER,
    audience_user_ids TEXT,
    payload           TEXT    NOT NULL,
    created_utc       INTEGER NOT NULL
);
CREATE INDEX events_by_time ON events (created_utc);
