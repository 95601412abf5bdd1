"""The relational store: tables, migrations, work queues, edited documents, sealed secrets."""
