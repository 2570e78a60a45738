"""The whole pipeline driven by `airflow dags test`: statuses, balances, audit chains and Redis records, with a
bad message on each topic sent to its dead-letter topic; then every DAG run again (redelivered messages
included) changes nothing but the Redis records it finds lost, which it writes again; a re-drive heals a lost
message without settling anything twice, and a second one publishes only what is not terminal."""

import json

import pytest

from include.airflow_control import run_dag
from ledgerflow import topology
from ledgerflow.store.kafka import LedgerflowProducerHook, publish
from tests.e2e.conftest import Scenario, messages_from, rewind, watermarks

# A bad message on each topic, among the scenario's: each goes to its dead-letter topic and the rest settle.
BAD_MESSAGES = {topology.TRANSACTIONS_TOPIC: b"not a transaction", topology.CLEARED_TOPIC: b'{"transaction_id": 7}'}
DEAD_LETTER_TOPICS = {topology.TRANSACTIONS_TOPIC: topology.TRANSACTIONS_DEAD_LETTER_TOPIC,
                      topology.CLEARED_TOPIC: topology.CLEARED_DEAD_LETTER_TOPIC}


@pytest.fixture(scope="module")
def scenario(pg_module):
    scenario = Scenario(pg_module)
    scenario.offsets_before = {topic: watermarks(topic) for topic in (
        topology.TRANSACTIONS_TOPIC, topology.CLEARED_TOPIC, *DEAD_LETTER_TOPICS.values())}
    producer = LedgerflowProducerHook(kafka_config_id=topology.KAFKA_CONN_ID).get_producer()
    for topic, value in BAD_MESSAGES.items():
        publish(producer, topic, [(f"{scenario.prefix}-bad".encode(), value)])
    scenario.create()
    scenario.run_ids = {dag_id: run_dag(dag_id) for dag_id in ("ledgerflow_produce", "ledgerflow_clear",
                                                                "ledgerflow_settle")}
    return scenario


def test_transactions_reach_their_expected_statuses(scenario):
    assert scenario.statuses() == Scenario.SETTLED_STATUSES


@pytest.mark.parametrize("topic", list(BAD_MESSAGES))
def test_a_bad_message_goes_to_its_dead_letter_topic_with_the_reason(scenario, topic):
    """The scenario's transfers reached their statuses all the same (the first test): it stopped nothing."""
    dead_letter_topic = DEAD_LETTER_TOPICS[topic]
    letters = [m for m in messages_from(dead_letter_topic, scenario.offsets_before[dead_letter_topic])
               if m.key() == f"{scenario.prefix}-bad".encode()]
    assert letters, f"nothing from {topic} in {dead_letter_topic}"
    headers = dict(letters[0].headers())
    assert letters[0].value() == BAD_MESSAGES[topic]
    assert headers["source_topic"] == topic.encode()
    assert headers["reason"], "the reason says why it was refused"
    assert int(headers["source_offset"]) >= scenario.offsets_before[topic][int(headers["source_partition"])]


def test_balances_move_exactly_and_reconcile(scenario):
    assert scenario.balances() == Scenario.SETTLED_BALANCES
    assert scenario.reconciliation_gaps() == []


def test_audit_chains_name_each_step(scenario):
    assert {t: scenario.audit_chain(t) for t in Scenario.TRANSFERS} == Scenario.SETTLED_AUDIT_CHAINS
    # Each change names the run and the try that made it, so Airflow's history leads to it and back.
    made_by = scenario.conn.execute(
        "SELECT changed_by, dag_id, run_id, task_id, try_number, map_index FROM transaction_audit "
        "WHERE transaction_id = %s ORDER BY id", (scenario.id("T1"),)).fetchall()
    assert made_by == [
        ("airflow:ledgerflow_clear.clear_transactions", "ledgerflow_clear", scenario.run_ids["ledgerflow_clear"],
         "clear_transactions", 1, -1),
        ("airflow:ledgerflow_settle.settle_transactions", "ledgerflow_settle", scenario.run_ids["ledgerflow_settle"],
         "settle_transactions", 1, -1)]


def test_redis_holds_settlement_and_rejection_records(scenario, redis_client):
    settlement = {k.decode(): v.decode() for k, v in redis_client.hgetall(f"settlement:{scenario.id('T2')}").items()}
    assert {k: settlement[k] for k in ("status", "amount", "from_balance_before", "from_balance_after",
                                       "to_balance_before", "to_balance_after", "clearance_status", "risk_score",
                                       "from_customer_name", "to_customer_name", "from_customer_risk",
                                       "from_account_type", "to_customer_risk", "to_account_type")} == {
        "status": "settled", "amount": "2500.50", "from_balance_before": "75000.00", "from_balance_after": "72499.50",
        "to_balance_before": "30000.00", "to_balance_after": "32500.50", "clearance_status": "cleared_with_conditions",
        "risk_score": "40", "from_customer_name": "Customer C3", "to_customer_name": "Customer C4",
        "from_customer_risk": "HIGH", "from_account_type": "CHECKING", "to_customer_risk": "LOW",
        "to_account_type": "SAVINGS"}
    assert settlement["settlement_time"]

    rejected = {k.decode(): v.decode() for k, v in redis_client.hgetall(f"rejected:{scenario.id('T4')}").items()}
    assert {k: rejected[k] for k in ("status", "reason_code", "amount", "available_balance", "risk_score")} == {
        "status": "rejected", "reason_code": "INSUFFICIENT_FUNDS", "amount": "20000.00",
        "available_balance": "15000.00", "risk_score": "50"}
    assert "does not cover 20000.00" in rejected["rejection_reason"] and rejected["rejection_time"]
    assert not redis_client.exists(f"settlement:{scenario.id('T4')}")


def test_running_every_dag_again_with_redelivered_messages_changes_nothing(scenario, redis_client, airflow_api):
    before = scenario.ledger_snapshot()
    records = [f"settlement:{scenario.id('T1')}", f"rejected:{scenario.id('T4')}"]
    redis_before = [redis_client.hgetall(key) for key in records]
    assert all(redis_before), "settle wrote them in the first place"
    redis_client.delete(*records)  # as after a crash between settle's commit and its Redis write
    published_before = watermarks(topology.TRANSACTIONS_TOPIC)

    run_dag("ledgerflow_produce")
    assert watermarks(topology.TRANSACTIONS_TOPIC) == published_before, "an already published window publishes nothing"

    rewind(topology.CLEAR_GROUP, topology.TRANSACTIONS_TOPIC, scenario.offsets_before[topology.TRANSACTIONS_TOPIC])
    rewind(topology.SETTLE_GROUP, topology.CLEARED_TOPIC, scenario.offsets_before[topology.CLEARED_TOPIC])
    clear_run = run_dag("ledgerflow_clear")
    run_dag("ledgerflow_settle")

    assert scenario.ledger_snapshot() == before
    assert [redis_client.hgetall(key) for key in records] == redis_before, "the redelivery wrote them again"
    # clear received the four transfers again and took each as a duplicate (other tests' messages may be there)
    assert airflow_api.xcom("ledgerflow_clear", clear_run, "clear_transactions")["duplicates"] >= 4


def test_a_redrive_heals_a_lost_message_and_settles_nothing_twice(scenario, redis_client):
    # T5 was cleared but its outcome never reached settle (a lost topic, say); T6 was never published.
    with scenario.conn.transaction(), scenario.conn.cursor() as cursor:
        scenario.insert_transfers(cursor, {"T5": ("A2", "A3", "100.00"), "T6": ("A4", "A5", "200.00")})
        cursor.execute("UPDATE transactions SET status = 'cleared', status_reason_code = 'CLEARED', risk_score = 20 "
                       "WHERE transaction_id = %s", (scenario.id("T5"),))
        cursor.execute("UPDATE transactions SET created_at = %s WHERE transaction_id = ANY(%s)",
                       (scenario.created_at, [scenario.id("T5"), scenario.id("T6")]))
    balances = scenario.balances()
    hour = scenario.created_at.replace(minute=0, second=0, microsecond=0)

    run_dag("ledgerflow_produce_window", logical_date=hour)
    run_dag("ledgerflow_clear")
    run_dag("ledgerflow_settle")

    statuses = scenario.statuses()
    assert (statuses["T5"], statuses["T6"]) == ("settled", "settled")
    assert scenario.balances() == {**balances, "A2": balances["A2"] - 100, "A3": balances["A3"] + 100,
                                   "A4": balances["A4"] - 200, "A5": balances["A5"] + 200}
    # each settled once: the audit enters settled once, and the journal holds one debit and one credit
    for transfer in ("T5", "T6"):
        assert [row[:2] for row in scenario.audit_chain(transfer)] == [("pending", "cleared"), ("cleared", "settled")]
    assert scenario.conn.execute("SELECT count(*) FROM journal_postings WHERE transaction_id = ANY(%s)",
                                 ([scenario.id("T5"), scenario.id("T6")],)).fetchone()[0] == 4
    assert scenario.reconciliation_gaps() == []
    assert redis_client.hget(f"settlement:{scenario.id('T5')}", "to_balance_after") is not None


def test_a_second_redrive_of_the_same_hour_publishes_only_what_is_not_terminal(scenario):
    """T7 is new in the hour; everything else of the scenario is settled or rejected by now. (The new message is
    left to the next clear run: its sensor would wait for ever once T7 is taken.)"""
    with scenario.conn.transaction(), scenario.conn.cursor() as cursor:
        scenario.insert_transfers(cursor, {"T7": ("A1", "A2", "10.00")})
        cursor.execute("UPDATE transactions SET created_at = %s WHERE transaction_id = %s",
                       (scenario.created_at, scenario.id("T7")))
    published_before = watermarks(topology.TRANSACTIONS_TOPIC)
    hour = scenario.created_at.replace(minute=0, second=0, microsecond=0)

    run_dag("ledgerflow_produce_window", logical_date=hour)

    republished = [json.loads(m.value())["transaction_id"]
                   for m in messages_from(topology.TRANSACTIONS_TOPIC, published_before)
                   if m.key().startswith(scenario.prefix.encode())]
    assert republished == [scenario.id("T7")]
