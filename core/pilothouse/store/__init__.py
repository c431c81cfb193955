"""The run store: where the event log lives, and how it is read back.

``base`` is the interface every backend implements and the read models views get;
``sqlite`` is the embedded backend (its schema in ``sqlite_migrations``); ``eventlog``
batches the engine's events into commits; ``live`` and ``lease`` are the shared
state of runs in flight. It imports only the vocabulary (``pilothouse``'s top modules).
"""
