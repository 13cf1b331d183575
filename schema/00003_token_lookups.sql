-- +goose Up

-- A failed send revokes the token minted for its delivery; without this
-- index that meant reading every token ever issued.
CREATE INDEX tokens_delivery_idx ON tokens (delivery_id);

-- +goose Down
DROP INDEX tokens_delivery_idx;
