-- Issued-coupon events (KAFKA_EVENTS=on): an outbox of every persisted issuance, written in the
-- transaction that inserts the row (see the PostgreSQL migration of the same name for why). MySQL
-- has no statement-level triggers and cannot disable one: the per-row trigger exists only while
-- capture is on — the repository creates it when a publisher turns capture on and drops it at
-- `couponrush events off` (src/coupons/sql/mysql.ts), so that without events an insert pays
-- nothing for it.

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
