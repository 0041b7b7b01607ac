"""Tables 1 and 2 from the result tree, the ours-vs-paper comparison, and the provenance audit."""
