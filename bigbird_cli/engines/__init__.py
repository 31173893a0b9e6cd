"""Engines: documents in, one record per document out, in input order (`local`: this process; `ray`: a pool of
Ray actors running the same loop)."""
