-- The user agent a device last logged in with (shown by the admin API's whois).
ALTER TABLE devices ADD COLUMN last_seen_user_agent TEXT;
