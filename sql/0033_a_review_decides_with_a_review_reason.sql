-- A review decides with a review's reason, and the waiting view dates a published transaction from its publication.
--
-- 1. A transfer in manual review moved on by hand with a reason of the pipeline's own (cleared for CLEARED,
--    say) was accepted, as the reason is one of its new status's (0019). No stage publishes a decision made by
--    hand, so it waited for a re-drive of its hour, but transactions_waiting, which tells a review's approval by
--    its reason, said it waited for settle: nothing pointed at the re-drive it needed. A transfer leaves review
--    now only for REVIEW_APPROVED, REVIEW_APPROVED_WITH_CONDITIONS or REVIEW_DECLINED, each status's own (0019
--    still checks the pair). A change to another status, or without a reason, is left to the status trigger
--    (0014, 0019), which names what is wrong with it. No stage moves a transaction out of review, so the
--    pipeline's updates pay for the trigger's WHEN alone.
-- 2. A pending transaction waits for clear from its publication, not from its creation: after produce had been
--    paused for 20 minutes, the view dated what it then published 20 minutes back, and `make redrive` re-drove
--    those hours at once as waiting for clear over 10 minutes.
CREATE FUNCTION transactions_refuse_review_decided_without_a_review_reason() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transaction % cannot leave manual review % with reason code %: a review decides with '
                    'REVIEW_APPROVED (cleared), REVIEW_APPROVED_WITH_CONDITIONS (cleared_with_conditions) or '
                    'REVIEW_DECLINED (rejected)', NEW.transaction_id, NEW.status, NEW.status_reason_code
        USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER transactions_review_decided_with_a_review_reason BEFORE UPDATE OF status ON transactions
    FOR EACH ROW WHEN (OLD.status = 'requires_manual_review'
                       AND NEW.status IN ('cleared', 'cleared_with_conditions', 'rejected')
                       AND NEW.status_reason_code NOT IN ('REVIEW_APPROVED', 'REVIEW_APPROVED_WITH_CONDITIONS',
                                                          'REVIEW_DECLINED'))
    EXECUTE FUNCTION transactions_refuse_review_decided_without_a_review_reason();

CREATE OR REPLACE VIEW transactions_waiting AS
SELECT t.transaction_id, t.status,
       CASE
           WHEN t.status = 'pending' AND t.published_at IS NULL THEN 'produce'
           WHEN t.status = 'pending' THEN 'clear'
           WHEN t.status_reason_code IN ('REVIEW_APPROVED', 'REVIEW_APPROVED_WITH_CONDITIONS') THEN 'window re-drive'
           WHEN t.status IN ('cleared', 'cleared_with_conditions') AND t.published_at IS NULL THEN 'window re-drive'
           WHEN t.status IN ('cleared', 'cleared_with_conditions') THEN 'settle'
           ELSE 'manual review'
       END AS waits_for,
       CASE WHEN t.status = 'pending' THEN coalesce(t.published_at, t.created_at)
            ELSE coalesce(t.status_changed_at, t.created_at) END AS since,
       t.created_at
  FROM transactions t JOIN transaction_statuses s ON s.status = t.status
 WHERE NOT s.terminal;
