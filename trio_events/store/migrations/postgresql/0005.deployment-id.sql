-- A random id of this deployment (the PostgreSQL twin of sqlite/0005).
-- depends: 0004.attachments

INSERT INTO log_meta (name, value)
VALUES ('deployment_id', floor(random() * 9007199254740990)::bigint + 1);
