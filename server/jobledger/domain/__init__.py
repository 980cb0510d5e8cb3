"""Pure core: event types, the job state machine, admission, specs and errors. No I/O, no
clock (I1)."""
