-- Named leases (work one process of the platform does at a time, such as following an
-- engine): the holder, its term (one more with each new holder) and when it expires, in
-- microseconds since the Unix epoch.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    term       INTEGER NOT NULL,
    expires_us INTEGER NOT NULL
);
