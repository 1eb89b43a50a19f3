"""Collection: SNMP polling (and later traps and probes); the only pysnmp imports live here."""
