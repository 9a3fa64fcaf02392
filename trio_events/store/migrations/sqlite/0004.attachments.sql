-- Attachments: metadata here, bytes under <data_dir>/files by content hash.
-- depends: 0003.log-meta

CREATE TABLE attachments (
    attachment_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id         INTEGER NOT NULL REFERENCES messages (message_id) ON DELETE CASCADE,
    room_id            INTEGER NOT NULL,
    file_name          TEXT    NOT NULL,
    file_size          INTEGER NOT NULL CHECK (file_size >= 0),
    file_checksum      TEXT    NOT NULL,  -- SHA-1 hex, as the contract says
    content_hash       TEXT    NOT NULL,  -- SHA-256 hex: the name of the stored file
    created_utc        INTEGER NOT NULL,
    last_modified_utc  INTEGER NOT NULL
);
CREATE INDEX attachments_by_message ON attachments (message_id, attachment_id);
CREATE INDEX attachments_by_hash ON attachments (content_hash);
