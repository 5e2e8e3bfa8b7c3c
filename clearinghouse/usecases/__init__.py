"""The clearinghouse's use-cases: each one database transaction (see ``app.py``)."""
