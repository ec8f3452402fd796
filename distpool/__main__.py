from .cli import main

# Guarded: on Windows and macOS the worker's slots start by importing this module afresh.
if __name__ == "__main__":
    raise SystemExit(main())
