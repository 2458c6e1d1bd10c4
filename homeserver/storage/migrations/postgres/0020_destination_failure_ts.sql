-- When a destination started failing (the first failure after a success), for the admin API's
-- `failure_ts`; cleared by the next delivery.
ALTER TABLE federation_destinations ADD COLUMN failure_ts BIGINT;
