-- Issued-coupon events (KAFKA_EVENTS=on): an outbox of every persisted issuance, written in the
-- transaction that inserts the row (see the PostgreSQL migration of the same name for why). MySQL
-- has no statement-level triggers with transition tables: the trigger runs per row, as one
-- INSERT … SELECT that writes nothing while capture is off. Request ids, when given, are a JSON
-- object "couponId:userId" → id in the session variable @couponrush_request_ids, which the
-- writer sets and clears inside its transaction.

CREATE TABLE coupon_events_switch (
  only_row TINYINT(1) NOT NULL DEFAULT 1 PRIMARY KEY,
  enabled  TINYINT(1) NOT NULL DEFAULT 0,
  CONSTRAINT coupon_events_switch_one_row CHECK (only_row = 1)
) ENGINE = InnoDB;
INSERT INTO coupon_events_switch () VALUES ();

CREATE TABLE coupon_issue_events (
  id         BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
  coupon_id  INT         NOT NULL,
  user_id    VARCHAR(64) NOT NULL,
  request_id VARCHAR(200) NULL
) ENGINE = InnoDB;

CREATE TRIGGER coupon_issue_events_capture AFTER INSERT ON coupon_issues FOR EACH ROW
  INSERT INTO coupon_issue_events (coupon_id, user_id, request_id)
  SELECT NEW.coupon_id, NEW.user_id, JSON_UNQUOTE(JSON_EXTRACT(@couponrush_request_ids, CONCAT('$."', NEW.coupon_id, ':', NEW.user_id, '"')))
  FROM coupon_events_switch WHERE enabled = 1;
