"""Retention, run by the retention worker (the one process with delete rights): the scheduled
purge (``purge``) and the reconciler that finds objects the ledger does not name
(``reconcile``). ``workers.tasks_retention`` and ``workers.tasks`` call them on a schedule;
`veil purge --now` calls the purge in-process, as an entry point may."""
