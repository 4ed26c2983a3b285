"""The experiment folder, the one store of an experiment's results (plain Python; no Prefect).

- :mod:`store.files`: checksummed files written atomically (a kill leaves the old
  file or the new one), and the errors that name a damaged or unwritable file.
- :mod:`store.layout`: where an experiment's files live.
- :mod:`store.code_version`: the hash of the math that is part of every key.
- :mod:`store.experiment`: keys, saving, the restore of the longest valid prefix of
  an experiment's stages, and the numeric platform every record carries.
- :mod:`store.ledger`: a person's answers, append-only and checksummed.
"""
