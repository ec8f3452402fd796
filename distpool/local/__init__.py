"""The embedded local cluster: a private Redis server and workers for ``Pool()`` with
nothing configured."""
