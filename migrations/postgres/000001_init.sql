-- couponrush schema, version 1: campaigns and issuances.
-- The database itself enforces docs/architecture.md, invariants 1 (never over-issue) and 2 (never
-- double-issue), so a bug in application code fails a transaction instead of breaking a promise.

CREATE TABLE coupons (
  id               integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name             text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  total_quantity   integer     NOT NULL CHECK (total_quantity > 0),
  -- Maintained in the same transaction as every row inserted into coupon_issues.
  issued_quantity  integer     NOT NULL DEFAULT 0 CHECK (issued_quantity >= 0),
  issue_starts_at  timestamptz NOT NULL,
  issue_ends_at    timestamptz NOT NULL,
  strategy         text        NOT NULL,
  discount_type    text        CHECK (discount_type IN ('AMOUNT', 'PERCENT')),
  discount_value   integer     CHECK (discount_value > 0),
  min_order_amount integer     CHECK (min_order_amount >= 0),
  -- Bumped by the db-optimistic strategy's compare-and-set.
  version          integer     NOT NULL DEFAULT 0,
  created_at       timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT coupons_window_ordered CHECK (issue_ends_at > issue_starts_at),
  CONSTRAINT coupons_discount_complete CHECK ((discount_type IS NULL) = (discount_value IS NULL)),
  CONSTRAINT coupons_percent_range CHECK (discount_type IS DISTINCT FROM 'PERCENT' OR discount_value <= 100),
  -- docs/architecture.md, invariant 1. The one deliberate exception: db-naive exists to show the
  -- race, so the database lets its campaigns over-issue (see README, "Strategies").
  CONSTRAINT coupons_not_over_issued CHECK (issued_quantity <= total_quantity OR strategy = 'db-naive')
);

CREATE TABLE coupon_issues (
  id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  coupon_id  integer     NOT NULL REFERENCES coupons (id),
  user_id    text        NOT NULL CHECK (user_id ~ '^[A-Za-z0-9._:-]{1,64}$'),
  issued_at  timestamptz NOT NULL DEFAULT now(),
  -- docs/architecture.md, invariant 2, for every strategy including db-naive.
  CONSTRAINT coupon_issues_one_per_user UNIQUE (coupon_id, user_id)
);

CREATE INDEX coupon_issues_by_user ON coupon_issues (user_id);
