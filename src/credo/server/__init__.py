"""`credo serve`: an OpenAI-compatible HTTP API over one base and many identity layers, plus a playground page."""
