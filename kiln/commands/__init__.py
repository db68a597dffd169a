"""The commands, as library functions: what `kiln train`, `test`, `predict`, `export`, `tune`, `cv`, `report`,
`new`, `baseline`, `inspect` and `doctor` do. The CLI (kiln.cli) parses arguments and maps errors to exit codes."""
