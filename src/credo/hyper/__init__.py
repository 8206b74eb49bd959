"""The closed-form route from a manifesto to a LoRA: teacher-forced passes, then ridge solves truncated by SVD."""
