"""Where results go: the predictions and errors CSV (schema, lock, resume) and committed parts."""
