"""The result store: every key distpool keeps in the result Redis."""
