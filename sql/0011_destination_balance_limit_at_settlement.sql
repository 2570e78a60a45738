-- settle refuses a transfer that would take the destination balance past the largest amount the money_amount
-- domain holds: before, the balance update failed its check, and with it the whole batch, on every retry.
INSERT INTO reason_codes (reason_code) VALUES ('DESTINATION_BALANCE_LIMIT_AT_SETTLEMENT');
