"""The `timebank` command and the city demo: the composition root over node and clearinghouse."""
