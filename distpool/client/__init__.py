"""What runs in the user's process: ``Pool``, ``Executor`` and their results."""
