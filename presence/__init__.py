"""Fan-out between replicas (the Broker seam) and the presence registry."""
