-- Bookkeeping of the event log (the PostgreSQL twin of sqlite/0003).
-- depends: 0002.rooms-messages-events

CREATE TABLE log_meta (
    name   TEXT    PRIMARY KEY,
    value  BIGINT  NOT NULL
);
INSERT INTO log_meta (name, value) VALUES ('trimmed_through', 0);
