"""Wire models and helpers shared by the replica, the monitor and the client.

Keeping one definition of every message here is what keeps the three programs honest: a field
renamed in one place is renamed for all of them, and the tolerant reading of other
implementations' spellings lives in exactly one decoder.
"""
