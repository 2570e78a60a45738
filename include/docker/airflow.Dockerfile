# Airflow for docker compose: the official image plus the same provider and client pins as requirements.txt,
# the database and Redis clients included (the image's own constraints may name others: the pipeline relies on
# redis-py 8's defaults and psycopg 3's COPY). Every provider requirements.txt names, the five Airflow's core
# installs (common-*, smtp, standard) too: the image has them at its own constraints' versions, not necessarily these.
# It copies nothing from the checkout: docker-compose.yaml builds it with this folder alone as the context.
FROM apache/airflow:3.3.2-python3.11
RUN pip install --no-cache-dir \
    "apache-airflow==3.3.2" \
    "apache-airflow-providers-apache-kafka==2.1.0" \
    "apache-airflow-providers-common-compat==1.23.0" \
    "apache-airflow-providers-common-io==1.11.0" \
    "apache-airflow-providers-common-sql==2.4.0" \
    "apache-airflow-providers-postgres==7.1.1" \
    "apache-airflow-providers-redis==4.7.1" \
    "apache-airflow-providers-smtp==3.2.0" \
    "apache-airflow-providers-standard==1.21.0" \
    "confluent-kafka==2.16.1" \
    "msgspec==0.22.0" \
    "hiredis==3.5.0" \
    "redis==8.1.0" \
    "psycopg==3.3.9" \
    "psycopg-binary==3.3.9" \
    "psycopg2-binary==2.9.13" \
    "SQLAlchemy==2.1.9"
