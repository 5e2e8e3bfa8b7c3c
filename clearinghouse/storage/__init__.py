"""The clearinghouse's storage: engines, typed models, migrations, the repository."""
