"""Adapters between the domain core and the services, on the Airflow providers' hooks."""
