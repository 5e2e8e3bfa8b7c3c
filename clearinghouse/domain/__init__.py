"""The clearinghouse's pure rules: claims, their states and reasons, positions and limits.

No I/O, no protobuf, no database: storage and use-cases apply these functions.
"""
