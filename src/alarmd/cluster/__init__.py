"""Distributed mode: the pieces that let collectors and correlators share work through Kafka.

``codec`` turns samples and trap events into keyed messages with deterministic ids,
``dedup`` remembers ids so that a copy or a redelivery is counted once, ``spool`` keeps
messages while Kafka cannot be reached, ``membership`` shares a location's devices by the
partitions a collector owns.  Kafka is the engine (consumer groups, compacted topics);
``app.py`` assembles the roles.
"""
