# Airflow for docker compose: the official image plus the same provider and client pins as requirements.txt,
# the database and Redis clients included (the image's own constraints may name others: the pipeline relies on
# redis-py 8's defaults and psycopg 3's COPY).
FROM apache/airflow:3.3.2-python3.11
RUN pip install --no-cache-dir \
    "apache-airflow==3.3.2" \
    "apache-airflow-providers-apache-kafka==2.1.0" \
    "apache-airflow-providers-postgres==7.1.1" \
    "apache-airflow-providers-redis==4.7.1" \
    "confluent-kafka==2.16.1" \
    "msgspec==0.22.0" \
    "hiredis==3.5.0" \
    "redis==8.1.0" \
    "psycopg==3.3.9" \
    "psycopg-binary==3.3.9" \
    "psycopg2-binary==2.9.13" \
    "SQLAlchemy==2.1.9"
