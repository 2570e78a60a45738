# Airflow for docker compose: the official image plus the same provider and client pins as requirements.txt.
FROM apache/airflow:3.3.2-python3.11
RUN pip install --no-cache-dir \
    "apache-airflow==3.3.2" \
    "apache-airflow-providers-apache-kafka==2.1.0" \
    "apache-airflow-providers-postgres==7.1.1" \
    "apache-airflow-providers-redis==4.7.1" \
    "confluent-kafka==2.16.1" \
    "msgspec==0.22.0" \
    "hiredis==3.5.0"
