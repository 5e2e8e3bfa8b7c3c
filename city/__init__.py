"""The `timebank` command and the city demo: the composition root over node and clearinghouse."""

import os

# gRPC core's own INFO lines (e.g. a GOAWAY at shutdown) are not for operators; errors still show.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
