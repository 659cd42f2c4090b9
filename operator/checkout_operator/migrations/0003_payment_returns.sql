-- Money that must go back. A Midtrans order whose checkout did not settle by it is
-- watched here until its Snap page can no longer be paid; whatever arrives is voided
-- (capture, pending) or refunded (settlement). The rows outlive the Checkout resource.
ALTER TABLE checkouts ADD COLUMN paid_order_id text;          -- verified payment the checkout settled by
ALTER TABLE checkouts ADD COLUMN paid_amount bigint;
-- Replaced by payment_returns (which records a return only once Midtrans accepted it).
ALTER TABLE checkouts DROP COLUMN refund_requested;

CREATE TABLE payment_returns (
    midtrans_order_id text PRIMARY KEY,
    order_id          text NOT NULL REFERENCES checkouts ON DELETE CASCADE,
    -- watching: nothing to give back yet; returned: voided/refunded at Midtrans;
    -- refused: Midtrans refused the refund (retried with backoff, surfaced); closed:
    -- the page can no longer be paid and nothing was paid.
    state             text NOT NULL DEFAULT 'watching',
    watch_until       timestamptz NOT NULL,
    next_check_at     timestamptz NOT NULL DEFAULT now(),
    attempts          integer NOT NULL DEFAULT 0,
    returned_how      text,        -- 'void' or 'refund'
    returned_amount   bigint,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_returns_due ON payment_returns (next_check_at)
    WHERE state IN ('watching', 'refused');
CREATE INDEX payment_returns_order ON payment_returns (order_id);
