"""The webhook service: Alertmanager intake, the queue's ledger, notifications."""
