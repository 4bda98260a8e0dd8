"""Retention, run by the retention worker (the one process with delete rights): the scheduled
purge (``purge``), erasure requests (``erase``) and the reconciler that finds objects the ledger
does not name (``reconcile``). ``workers.tasks_retention`` and ``workers.tasks`` call them on a
schedule or a request; `veil purge --now` and `veil erase --now` call them in-process, as an
entry point may."""
