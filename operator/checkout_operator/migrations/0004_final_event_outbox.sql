-- The final-event outbox. A checkout whose ending is journaled (finished_at) but whose
-- final event is not yet published (final_event_published) is picked up by the relay
-- and published; the ending and this pending mark are written in one transaction.
-- Once published, the Product service is asked whether the reservation is closed;
-- reservation_closed_at records its answer (closed, or never reserved). Until then the
-- event is republished whenever the reservation is still found open.
ALTER TABLE checkouts ADD COLUMN reservation_closed_at timestamptz;
ALTER TABLE checkouts ADD COLUMN final_event_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE checkouts ADD COLUMN final_event_check_at timestamptz;
-- Endings from before this migration that are old enough were settled by then.
UPDATE checkouts SET reservation_closed_at = finished_at
    WHERE finished_at IS NOT NULL AND finished_at < now() - interval '7 days';
CREATE INDEX checkouts_final_events ON checkouts (finished_at)
    WHERE finished_at IS NOT NULL AND reservation_closed_at IS NULL;
-- The sweep compares these with the resources that still exist.
CREATE INDEX checkouts_undeleted ON checkouts (namespace) WHERE deleted_at IS NULL;
