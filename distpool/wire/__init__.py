"""What travels between clients and workers, and how each side checks it is genuine."""
