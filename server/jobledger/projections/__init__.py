"""Read models kept from the event log: the inline `jobs` projection and the queue views."""
