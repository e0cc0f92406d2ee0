"""The `slmops` command line: thin commands over the library; rendering lives in `render`."""
