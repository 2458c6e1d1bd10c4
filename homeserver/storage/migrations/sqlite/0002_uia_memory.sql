-- UIA sessions remember the parameters of the request that started them (Synapse's "clientdict")
-- and, for registration, the user id once it succeeded, so a retried request is idempotent.
ALTER TABLE uia_sessions ADD COLUMN client_dict TEXT;
ALTER TABLE uia_sessions ADD COLUMN result TEXT;
