"""The pure domain core: nothing here imports Airflow, Kafka, Redis or a database driver."""
