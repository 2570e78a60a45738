-- settle refuses a transfer from or to an account that is no longer ACTIVE (frozen, closed or made inactive
-- since clearance saw it active): before, it moved the money all the same. The reason names which side.
INSERT INTO reason_codes (reason_code) VALUES
    ('SOURCE_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT'),
    ('DESTINATION_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT');
