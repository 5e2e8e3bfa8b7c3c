"""Gathering a report's data from a database, read-only: ``node`` from a district's,
``clearinghouse`` from the bureau's. The only part of city/reports that reads a database
(tests/test_layers.py); what it returns is plain ``ReportData`` for the renderers."""
