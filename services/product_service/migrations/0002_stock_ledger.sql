-- The stock ledger: every change of products.stock, written in the same transaction as
-- the change. The movements of a product sum to its stock on hand, and every unit sold
-- is named by the transaction that sold it (`saga-devenv audit` checks both).
CREATE TABLE stock_movements (
    id         bigserial PRIMARY KEY,
    product_id text NOT NULL REFERENCES products (id),
    delta      bigint NOT NULL,
    -- baseline: the stock a product had when the ledger began (this migration);
    -- created: its stock at creation; restock/adjust: an owner raised/lowered it;
    -- sold: a settled reservation took the units (reference: its transaction id).
    reason     text NOT NULL
        CHECK (reason IN ('baseline', 'created', 'restock', 'adjust', 'sold')),
    reference  text,
    at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stock_movements_sale_names_its_transaction
        CHECK ((reason = 'sold') = (reference IS NOT NULL))
);
CREATE INDEX stock_movements_product ON stock_movements (product_id);
-- A transaction sells each of its products once: a repeated sale is no movement.
CREATE UNIQUE INDEX stock_movements_sale ON stock_movements (product_id, reference)
    WHERE reason = 'sold';

-- Products from before the ledger started with what is on hand plus what was sold
-- (the lines of settled reservations); each of those sales is recorded as one.
INSERT INTO stock_movements (product_id, delta, reason, at)
SELECT p.id, p.stock + COALESCE(s.units, 0), 'baseline', p.created_at
FROM products p
LEFT JOIN (
    SELECT l.product_id, sum(l.quantity) AS units
    FROM reservation_lines l JOIN reservations r USING (transaction_id)
    WHERE r.status = 'settled'
    GROUP BY l.product_id
) s ON s.product_id = p.id;

INSERT INTO stock_movements (product_id, delta, reason, reference, at)
SELECT l.product_id, -l.quantity, 'sold', l.transaction_id, r.updated_at
FROM reservation_lines l JOIN reservations r USING (transaction_id)
WHERE r.status = 'settled';
