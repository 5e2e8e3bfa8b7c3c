"""The web console (issue 18): the pages staff, members, the bureau and the public use.

Server-rendered pages over the node's and the clearinghouse's gRPC APIs, called as the
person logged in (or, for the public supervision page, as nobody): the console has no
database and no back door into one. Chinese (zh-CN) first, English complete, through
one message catalogue (``web.catalogue``).
"""
