-- Every job written gets an id of its own, part of a claim's fence: two jobs of one instance
-- claimed by one process for their first attempt are told apart (a late completion of the
-- first cannot remove the second).
ALTER TABLE jobs ADD COLUMN id TEXT NOT NULL DEFAULT '';
