-- Bookkeeping of the event log: how far retention has trimmed it, so that a
-- resume from an older id is answered with ResyncRequired, exactly.
-- depends: 0002.rooms-messages-events

CREATE TABLE log_meta (
    name   TEXT    PRIMARY KEY,
    value  INTEGER NOT NULL
);
INSERT INTO log_meta (name, value) VALUES ('trimmed_through', 0);
