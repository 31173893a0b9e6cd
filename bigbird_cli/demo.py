"""`make demo`: a placeholder until the summarize command lands."""

print("bigbird demo: the summarize command is not wired in yet.")
