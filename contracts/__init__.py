"""The leaf both planes import: shapes (placement), SQL names and quoting (identifiers), channel
and key names (channels), tenant role passwords (credentials), advisory-lock keys (locks), each
tier's names, login, pool and binding (tiers), and errors answered as problem details (problems).

Nothing here does I/O or imports another package of ours; the router installs with only this.
"""
