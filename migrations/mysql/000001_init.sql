-- couponrush schema for MySQL 8.0.16+ and MariaDB 10.11+, version 1: campaigns and issuances.
-- The same tables, columns and invariants as migrations/postgres/ after its version 2; the
-- database itself enforces docs/architecture.md, invariants 1 (never over-issue) and 2 (never
-- double-issue), so a bug in application code fails a transaction instead of breaking a promise.
--
-- Where it differs from PostgreSQL, and why:
-- - DATETIME(3) in UTC (every connection sets time_zone '+00:00'), not timestamptz.
-- - user_id and strategy are ASCII with a binary collation: the default collations compare
--   case-insensitively, which would make 'Alice' and 'alice' one user under the primary key.
-- - No foreign key from coupon_issues to coupons. InnoDB checks a foreign key by taking a
--   shared lock on the parent row, so two transactions that each insert an issuance and then
--   claim a unit (an exclusive lock on the same coupon row) deadlock each other: every
--   concurrent issuance would. Rows are only ever inserted for a coupon read by id first, and
--   coupons are never deleted.
-- MySQL commits each DDL statement by itself: a migration that fails halfway is not rolled
-- back, so every statement here is one the server either applies whole or refuses.

CREATE TABLE coupons (
  id               INT          NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name             VARCHAR(200) NOT NULL,
  total_quantity   INT          NOT NULL,
  -- Maintained in the same transaction as every row inserted into coupon_issues.
  issued_quantity  INT          NOT NULL DEFAULT 0,
  issue_starts_at  DATETIME(3)  NOT NULL,
  issue_ends_at    DATETIME(3)  NOT NULL,
  strategy         VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  discount_type    VARCHAR(16)  CHARACTER SET ascii COLLATE ascii_bin NULL,
  discount_value   INT          NULL,
  min_order_amount INT          NULL,
  -- Bumped by the db-optimistic strategy's compare-and-set.
  version          INT          NOT NULL DEFAULT 0,
  created_at       DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  CONSTRAINT coupons_name_length CHECK (CHAR_LENGTH(name) BETWEEN 1 AND 200),
  CONSTRAINT coupons_total_positive CHECK (total_quantity > 0),
  CONSTRAINT coupons_issued_nonnegative CHECK (issued_quantity >= 0),
  CONSTRAINT coupons_discount_type_known CHECK (discount_type IN ('AMOUNT', 'PERCENT')),
  CONSTRAINT coupons_discount_positive CHECK (discount_value > 0),
  CONSTRAINT coupons_min_order_nonnegative CHECK (min_order_amount >= 0),
  CONSTRAINT coupons_window_ordered CHECK (issue_ends_at > issue_starts_at),
  CONSTRAINT coupons_discount_complete CHECK ((discount_type IS NULL) = (discount_value IS NULL)),
  CONSTRAINT coupons_percent_range CHECK (discount_type IS NULL OR discount_type <> 'PERCENT' OR discount_value <= 100),
  -- docs/architecture.md, invariant 1. The one deliberate exception: db-naive exists to show the
  -- race, so the database lets its campaigns over-issue (see README, "Strategies").
  CONSTRAINT coupons_not_over_issued CHECK (issued_quantity <= total_quantity OR strategy = 'db-naive')
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE coupon_issues (
  coupon_id  INT         NOT NULL,
  user_id    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  issued_at  DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  -- docs/architecture.md, invariant 2, for every strategy including db-naive.
  PRIMARY KEY (coupon_id, user_id),
  -- No character outside the set, rather than ^[…]+$: in MySQL's and MariaDB's regex engines `$`
  -- also matches before a final newline, so 'a' + newline would pass that.
  CONSTRAINT coupon_issues_user_id_check CHECK (CHAR_LENGTH(user_id) BETWEEN 1 AND 64 AND user_id NOT REGEXP '[^A-Za-z0-9._:-]')
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE INDEX coupon_issues_by_user ON coupon_issues (user_id);
