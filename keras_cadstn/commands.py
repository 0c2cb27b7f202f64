"""Sub-commands of ``cadstn`` beyond the data tools (train, eval, demo, export)."""


def add_parsers(sub):
    pass
