"""Dispatch: lead-team routing and delivery of work orders to ticketing over Kafka."""
