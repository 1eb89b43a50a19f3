"""Rules: YAML rule files compiled into thresholds with ``for``, evaluated without I/O."""
