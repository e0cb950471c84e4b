-- Issued-coupon events (KAFKA_EVENTS=on): an outbox of every persisted issuance, written in the
-- transaction that inserts the row, so an event can never be lost between the commit and Kafka.
-- A trigger writes it, so every strategy's insert is covered without its SQL knowing. The
-- publisher (`couponrush worker`) produces the outbox's rows to Kafka and deletes them; there is
-- no cursor, so rows that commit out of id order are never skipped. Capture is off until a
-- publisher turns it on (and `couponrush events off` turns it off): the switch row records it,
-- and the trigger itself is created DISABLED and enabled with it, so that without events an
-- insert pays nothing (measured in docs/performance.md).

CREATE TABLE coupon_events_switch (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  enabled  boolean NOT NULL DEFAULT false
);
INSERT INTO coupon_events_switch DEFAULT VALUES;

CREATE TABLE coupon_issue_events (
  id         bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  coupon_id  integer NOT NULL,
  user_id    text    NOT NULL,
  -- The API's request id, when the writer passed it (the workers do: it travels in the queue).
  request_id text
);

-- Statement-level, over the statement's new rows: one INSERT … SELECT per batch, not per row.
-- The request ids, when given, are a JSON object "couponId:userId" → id in the transaction-local
-- setting couponrush.request_ids (empty once a transaction that set it has ended).
CREATE FUNCTION coupon_issue_events_capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT enabled FROM coupon_events_switch) THEN
    INSERT INTO coupon_issue_events (coupon_id, user_id, request_id)
    SELECT n.coupon_id, n.user_id, NULLIF(current_setting('couponrush.request_ids', true), '')::jsonb ->> (n.coupon_id || ':' || n.user_id)
    FROM new_rows n;
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER coupon_issue_events_capture
  AFTER INSERT ON coupon_issues
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION coupon_issue_events_capture();

ALTER TABLE coupon_issues DISABLE TRIGGER coupon_issue_events_capture;
