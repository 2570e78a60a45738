"""ledgerflow: clearance and settlement of financial transactions, orchestrated by Airflow.

core/   pure domain: money, statuses and transitions, risk and clearance rules, settlement arithmetic,
        message contracts. No Airflow, Kafka or Redis imports.
store/  adapters on the providers' hooks: PostgreSQL (set-based SQL), Redis, Kafka.
"""
