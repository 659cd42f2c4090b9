-- Every Snap order ever asked for a checkout, journaled before Midtrans is called.
-- The checkout row keeps the one page the buyer sees (midtrans_order_id/snap_token,
-- written compare-and-set); the others (an answer lost to a crash or timeout, a page
-- made by a second operator that lost the race) are never handed out, but Midtrans
-- would take a payment on them until their Snap expiry, so whatever watches for stray
-- money finds them here, also after the Checkout resource is deleted.
CREATE TABLE payment_pages (
    midtrans_order_id text PRIMARY KEY,
    order_id          text NOT NULL REFERENCES checkouts ON DELETE CASCADE,
    attempt           integer NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- Not before this can the page no longer be paid (our estimate of Midtrans' Snap
    -- expiry, taken before the call plus a margin, so never earlier than Midtrans').
    snap_expires_at   timestamptz NOT NULL,
    snap_token        text     -- set when Midtrans answered; NULL if the answer was lost
);
CREATE INDEX payment_pages_order ON payment_pages (order_id, created_at);
