"""The long-running processes: bridge (jobs in), relay (control in), listener (events out), scheduler (repairs)."""
