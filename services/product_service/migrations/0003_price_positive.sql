-- A price is at least 1 IDR: a product priced 0 is refused at creation (docs/services.md),
-- and now by the database too, on every insert and every change of a product row.
-- Live products priced 0 stored before that rule may exist. Then the constraint is added
-- NOT VALID (pg_constraint.convalidated = false): those rows stay, any change to one must
-- give it a price (or delete it: a deleted product is never sold, so it may keep its 0),
-- and once none is left `ALTER TABLE products VALIDATE CONSTRAINT products_price_positive`
-- makes it whole. Without such rows it is validated here.
ALTER TABLE products ADD CONSTRAINT products_price_positive
    CHECK (price > 0 OR deleted_at IS NOT NULL) NOT VALID;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM products WHERE price <= 0 AND deleted_at IS NULL) THEN
        ALTER TABLE products VALIDATE CONSTRAINT products_price_positive;
    END IF;
END
$$;
