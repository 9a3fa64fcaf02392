-- A random id of this deployment, kept with its data: the attachment files'
-- directory is marked with it, so that a process started on another database
-- (a wrong URL, an empty database) never sweeps files of this one.
-- depends: 0004.attachments

INSERT INTO log_meta (name, value) VALUES ('deployment_id', abs(random()) % 9007199254740991 + 1);
